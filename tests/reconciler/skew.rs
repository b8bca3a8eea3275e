//! The watch-skew window: right after a leader change (or a re-list) the index can hold a copy
//! before its original, and the plan then wants the copy gone. The delete must re-check the origin
//! against the apiserver and leave a copy its original still wants.
//!
//! The lagging watch is reproduced exactly as the new leader would see it: the world listed from
//! the real apiserver, less the original (its watch has not delivered it yet). The delete the plan
//! makes of it is then executed by the product's own `Applier`, as the service account.

use crate::reconciler::{db_copied_into_a_member, delete_original};
use scoped_secrets::keys;
use scoped_secrets::plan::{self, Action, OverwritePolicy, Settings};
use scoped_secrets::reconciler::apply::{Applier, Outcome, Requeue};
use scoped_secrets::world::World;
use testbed::harness::*;
use testbed::prelude::*;

#[test]
fn a_copy_indexed_before_its_original_is_not_deleted() {
    let _turn = serial();
    let (project, ns, running, copy) = db_copied_into_a_member("skew");
    // The old leader is gone: only the executed delete below writes.
    running.stop();

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let client = client(&env().sa_kubeconfig).await.expect("a client");
        let mut world = scoped_secrets::plan_load::load_world(client.clone(), true)
            .await
            .expect("the world lists");
        lag_behind(&mut world, &project.backing, "db");
        let settings = Settings::with_policy(OverwritePolicy::Warn);
        let delete = plan::planned(&world, &settings, false)
            .into_iter()
            .find(|a| matches!(a, Action::Delete { .. }) && a.namespace() == ns && a.name() == "db")
            .expect("the skewed world plans the copy's delete");
        let (_leading_tx, leading) = tokio::sync::watch::channel(true);
        let applier = Applier::new(client, leading, settings);

        let outcome = applier
            .apply(&delete, Some(&world))
            .await
            .expect("no error");
        assert_eq!(outcome, Outcome::Requeue(Requeue::Stale));
        let kept = get_secret(&ns, "db").expect("the copy is still there");
        assert_eq!(kept["metadata"]["uid"], copy["metadata"]["uid"]);

        // Once the original is really gone, the very same delete goes through.
        delete_original(&project, "db");
        let outcome = applier
            .apply(&delete, Some(&world))
            .await
            .expect("no error");
        assert_eq!(outcome, Outcome::Written);
    });
    gone(&ns, "db");
}

#[test]
fn an_overwrite_planned_before_its_target_was_labelled_is_not_written() {
    // Project Q's backing namespace is also a member of project P, and holds a plain secret of
    // the name of P's original: the plan (warn policy) overwrites it. Before the write, Q's owner
    // labels it project-scoped, making it Q's original: the write must not go through on the
    // stale plan (which would replace Q's original), but be planned again.
    let _turn = serial();
    let other = project("skew-q");
    let project = project("skew-ow");
    let ns = other.backing.clone();
    let id = format!("field.cattle.io/projectId={}", project.id());
    ok(kubectl(&["annotate", "namespace", &ns, &id, "--overwrite"]));
    let member = format!("field.cattle.io/projectId={}", project.name);
    ok(kubectl(&[
        "label",
        "namespace",
        &ns,
        &member,
        "--overwrite",
    ]));
    ok(kubectl_apply(
        &secret_yaml(&ns, "db", "", "data: {k: cGxhaW4=}\n"),
        &[],
    ));
    apply_original(&project, "db", "k: dg==", "");
    let outcome = overwrite_of_db_applied(
        &ns,
        |label| label.is_none(),
        || {
            let label = format!("{}={}", keys::PROJECT_SCOPED_LABEL, other.name);
            ok(kubectl(&["label", "secret", "db", "-n", &ns, &label]));
        },
    );
    assert_eq!(outcome, Outcome::Requeue(Requeue::Stale));
    let kept = get_secret(&ns, "db").expect("the secret is still there");
    assert_eq!(data(&kept), serde_json::json!({"k": "cGxhaW4="}));
    assert_eq!(
        kept["metadata"]["labels"][keys::PROJECT_SCOPED_LABEL],
        other.name.as_str()
    );
}

#[test]
fn a_labelled_stray_planned_as_such_is_overwritten() {
    // A labelled secret that is no original (written behind the webhook in a member namespace)
    // holds the name: under the warn policy the plan overwrites it knowing it is labelled, and
    // the write goes through.
    let _turn = serial();
    let project = project("skew-st");
    let ns = namespace_in(&project, "skew-st");
    let label = format!("{}: p-gone", keys::PROJECT_SCOPED_LABEL);
    let stray = secret_yaml(&ns, "db", &label, "data: {k: c3RyYXk=}\n");
    ok(kubectl_stdin(
        &env().sa_kubeconfig,
        &["create", "-f", "-"],
        &stray,
    ));
    apply_original(&project, "db", "k: dg==", "");
    let outcome = overwrite_of_db_applied(&ns, Option::is_some, || {});
    assert_eq!(outcome, Outcome::Written);
    let copy = get_secret(&ns, "db").expect("the copy");
    assert!(is_copy_of(&copy, &project.backing, "db"), "{copy}");
}

/// Lists the world as the reconciler's identity, plans it (warn policy) and finds the Overwrite of
/// `ns/db` whose planned label passes `planned_label`; runs `meanwhile` (what changes between a
/// plan and its write) and applies it. How the write ended.
fn overwrite_of_db_applied(
    ns: &str,
    planned_label: impl Fn(&Option<String>) -> bool,
    meanwhile: impl FnOnce(),
) -> Outcome {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let client = client(&env().sa_kubeconfig).await.expect("a client");
        let world = scoped_secrets::plan_load::load_world(client.clone(), true)
            .await
            .expect("the world lists");
        let settings = Settings::with_policy(OverwritePolicy::Warn);
        let overwrite = plan::planned(&world, &settings, false)
            .into_iter()
            .find(|a| match a {
                Action::Overwrite { label, .. } => {
                    planned_label(label) && a.namespace() == ns && a.name() == "db"
                }
                _ => false,
            })
            .unwrap_or_else(|| panic!("the plan overwrites {ns}/db"));
        meanwhile();
        let (_leading_tx, leading) = tokio::sync::watch::channel(true);
        let applier = Applier::new(client, leading, settings);
        applier
            .apply(&overwrite, Some(&world))
            .await
            .expect("no error")
    })
}

/// The world as a lagging scoped-secrets watch leaves it: `backing/name` not delivered yet.
fn lag_behind(world: &mut World, backing: &str, name: &str) {
    world.remove_scoped(backing, name);
    world.remove_secret_meta(backing, name);
}
