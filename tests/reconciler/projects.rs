//! Backing namespaces belong to exactly one project, as the reconciler sees it (issue 9, item 2): a
//! bare Project gets a generated namespace marked for it; names that once collided no longer do; a
//! claim that slipped past admission (written as the reconciler's identity, which the project guard
//! lets through) makes the namespace neither project's, and nothing is deleted because of it.
//!
//! A child module of the reconciler tests, to share their helpers and take turns with them.

use super::*;
use scoped_secrets::keys::ProjectId;

/// A status write by the reconciler's identity, which the project guard never sees (its RBAC
/// lacks the GET kubectl makes first, so the admin lends it its group).
fn patch_status_past_the_guard(name: &str, backing: &str) {
    let status = format!(r#"{{"status":{{"backingNamespace":"{backing}"}}}}"#);
    ok(kubectl_line(&format!(
        "patch project {name} -n local --subresource=status --type=merge -p {status} --as=system:serviceaccount:scoped-secrets-system:scoped-secrets --as-group=system:masters"
    )));
}

/// `kubectl get project ... -o jsonpath=...` as the admin.
fn project_field(cluster: &str, name: &str, jsonpath: &str) -> String {
    stdout(&kubectl(&[
        "get",
        "project",
        name,
        "-n",
        cluster,
        "-o",
        &format!("jsonpath={jsonpath}"),
    ]))
}

/// `status,reason` of the project's BackingNamespaceReady condition.
fn backing_ready(cluster: &str, name: &str) -> String {
    let pick = format!(
        "{{.status.conditions[?(@.type==\"{}\")].status}},{{.status.conditions[?(@.type==\"{}\")].reason}}",
        keys::BACKING_NAMESPACE_READY_CONDITION,
        keys::BACKING_NAMESPACE_READY_CONDITION
    );
    project_field(cluster, name, &pick)
}

fn marker(namespace: &str) -> String {
    stdout(&kubectl(&[
        "get",
        "namespace",
        namespace,
        "-o",
        &format!(
            "jsonpath={{.metadata.annotations.{}}}",
            keys::BACKING_NAMESPACE_OF_ANNOTATION
                .replace('.', "\\.")
                .replace('/', "\\/")
        ),
    ]))
}

/// A hijack's victim: Project `prefix`, a member namespace (`member`) holding the copy of its
/// original `db`, and the reconciler that wrote it.
fn victim_with_a_copy(prefix: &str, member: &str) -> (TestProject, String, Running) {
    let victim = project(prefix);
    let member = namespace_in(&victim, member);
    let running = start(OverwritePolicy::Warn);
    apply_original(&victim, "db", "key: ZG9n", "");
    copy_where(&member, &victim.backing, "db", "the victim's copy", |_| {
        true
    });
    (victim, member, running)
}

#[test]
fn a_bare_project_gets_a_generated_namespace_marked_for_it_and_old_collisions_are_gone() {
    let _turn = serial();
    // The victim of hijack (b): `local:p-<x>`, backing `local-p-<x>`, with a copy.
    let (victim, member, running) = victim_with_a_copy("p", "pb-a");
    // The attacker: `local-p:<x>`, which once got `local-p-<x>` too.
    let cluster = "local-p";
    let attacker = victim.name.trim_start_matches("p-").to_owned();
    bare_project(cluster, &attacker);
    let generated = ProjectId::new(cluster, attacker.clone()).generated_backing_namespace();
    assert_eq!(generated, format!("local--p-{attacker}"));
    eventually("the attacker's backing namespace", WAIT, || {
        (project_field(cluster, &attacker, "{.status.backingNamespace}") == generated).then_some(())
    });
    assert_eq!(marker(&generated), format!("{cluster}:{attacker}"));
    assert_eq!(
        backing_ready(cluster, &attacker),
        format!("True,{}", keys::BACKING_NAMESPACE_ASSIGNED)
    );
    // The victim keeps its namespace and its copy, and is never contested.
    let victim_id = ProjectId::new("local", victim.name.clone());
    eventually("the reconciler to index the attacker", WAIT, || {
        let world = running.index.read();
        (world.backing_project(&generated).is_some()).then_some(())
    });
    assert_eq!(
        running.index.read().backing_project(&victim.backing),
        Some(&victim_id)
    );
    assert!(get_secret(&member, "db").is_some_and(|s| is_copy_of(&s, &victim.backing, "db")));
    assert_eq!(backing_ready("local", &victim.name), ",");
    running.stop();
}

#[test]
fn a_claim_past_admission_makes_the_namespace_neither_projects_and_deletes_nothing() {
    let _turn = serial();
    let (victim, member, running) = victim_with_a_copy("a-team", "claim-a");
    // The attacker's Project passes admission (an ordinary name) and gets its own namespace ...
    let evil = unique("evil");
    bare_project("local", &evil);
    eventually("the attacker's own backing namespace", WAIT, || {
        (!project_field("local", &evil, "{.status.backingNamespace}").is_empty()).then_some(())
    });
    // ... then claims the victim's, as the reconciler's identity (the guard lets it through).
    patch_status_past_the_guard(&evil, &victim.backing);
    let claimed = format!("False,{}", keys::BACKING_NAMESPACE_CLAIMED);
    for name in [&victim.name, &evil] {
        eventually(&format!("the Claimed condition on {name}"), WAIT, || {
            (backing_ready("local", name) == claimed).then_some(())
        });
        eventually(
            &format!("a BackingNamespaceClaimed Event on {name}"),
            WAIT,
            || {
                let notes = ok(kubectl(&[
                    "get",
                    "events",
                    "-n",
                    "local",
                    "--field-selector",
                    &format!(
                        "reason={},involvedObject.name={name}",
                        keys::BACKING_NAMESPACE_CLAIMED
                    ),
                    "-o",
                    "jsonpath={.items[*].message}",
                ]));
                notes.contains(&victim.backing).then_some(())
            },
        );
    }
    // The namespace is neither's, and a full round later the victim's copy is still there.
    let index = running.index.clone();
    assert_eq!(index.read().backing_project(&victim.backing), None);
    let rounds = running.rounds();
    // Any change wakes the reconciler for a round that plans the whole world again.
    ok(kubectl_line(&format!(
        "annotate namespace {member} touched=1"
    )));
    eventually("another reconcile round", WAIT, || {
        (running.rounds() > rounds).then_some(())
    });
    assert!(
        get_secret(&member, "db").is_some_and(|s| is_copy_of(&s, &victim.backing, "db")),
        "the victim's copy was removed"
    );
    // The attacker lets go: the victim owns its namespace again and is ready.
    patch_status_past_the_guard(&evil, "somewhere-else");
    eventually("the victim ready again", WAIT, || {
        (backing_ready("local", &victim.name)
            == format!("True,{}", keys::BACKING_NAMESPACE_ASSIGNED))
        .then_some(())
    });
    running.stop();
}
