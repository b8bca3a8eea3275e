//! The embedded reconciler against the real apiserver: copies reach every project namespace, follow
//! their original, go away when unwanted, are repaired when tampered with, and only the lease holder
//! writes.
//!
//! Each test starts its own reconciler (own index, own watches, a Lease of its own) as the product's
//! service account and stops it at the end; the tests take turns (`SERIAL`), because a reconciler
//! acts on the whole cluster and "while the reconciler is stopped" must mean stopped.

use scoped_secrets::keys;
use scoped_secrets::plan::{OverwritePolicy, Settings};
use scoped_secrets::world;
use serde_json::Value;
use testbed::harness::*;
use testbed::prelude::*;

/// Project `<prefix>` and a member namespace of it, `<prefix>-a`.
fn project_with_a_member(prefix: &str) -> (TestProject, String) {
    let project = project(prefix);
    let ns = namespace_in(&project, &format!("{prefix}-a"));
    (project, ns)
}

/// [`project_with_a_member`], and a reconciler under the warn policy.
fn reconciled_member(prefix: &str) -> (TestProject, String, Running) {
    let (project, ns) = project_with_a_member(prefix);
    (project, ns, start(OverwritePolicy::Warn))
}

/// [`reconciled_member`] and the project's original `db` (`k: v`): where most of these tests
/// begin. Waits for the copy in the member and returns it as first seen.
#[track_caller]
pub(crate) fn db_copied_into_a_member(prefix: &str) -> (TestProject, String, Running, Value) {
    let (project, ns, running) = reconciled_member(prefix);
    apply_original(&project, "db", "k: dg==", "");
    let copy = copy_where(&ns, &project.backing, "db", "the copy", |_| true);
    (project, ns, running, copy)
}

/// [`db_copied_into_a_member`] with two members, `<prefix>-a` and `<prefix>-b`, each holding its
/// copy.
#[track_caller]
fn db_copied_into_two_members(prefix: &str) -> (TestProject, (String, String), Running) {
    let project = project(prefix);
    let (a, b) = two_namespaces_in(&project, prefix);
    let running = reconciling_db(&project);
    copied_into(&[&a, &b], &project, "db");
    (project, (a, b), running)
}

/// Deletes the project's original `name`.
#[track_caller]
pub(crate) fn delete_original(project: &TestProject, name: &str) {
    ok(kubectl(&["delete", "secret", name, "-n", &project.backing]));
}

/// Asserts that `ns` still holds its copy of `backing/name`.
#[track_caller]
pub(crate) fn assert_copy_kept(ns: &str, backing: &str, name: &str, what: &str) {
    let kept = get_secret(ns, name).expect(what);
    assert!(is_copy_of(&kept, backing, name), "{what}: {kept}");
}

/// A secret's uid (empty where it has none).
fn uid(secret: &Value) -> String {
    secret["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The counters of a reconciler's rounds and their outcomes: all of them stay still while it plans
/// nothing.
const ROUND_COUNTERS: [&str; 4] = [
    "scoped_secrets_reconciler_reconciles_total",
    "scoped_secrets_reconciler_writes_total",
    "scoped_secrets_reconciler_errors_total",
    "scoped_secrets_reconciler_requeues_total",
];

#[test]
fn rancher_example_reaches_every_project_namespace() {
    let _turn = serial();
    let project = project("rx");
    let (a, b) = two_namespaces_in(&project, "rx");
    let outsider = unique("rx-out");
    ok(kubectl(&["create", "namespace", &outsider]));
    let running = start(OverwritePolicy::Warn);
    apply_original(&project, "test-secret", "key: ZG9n", "");
    for ns in [&a, &b] {
        let copy = copy_where(ns, &project.backing, "test-secret", "the copy", |s| {
            data(s) == serde_json::json!({"key": "ZG9n"})
        });
        assert_eq!(copy["type"], "Opaque");
        assert_eq!(
            annotation(&copy, keys::USER_SECRET_ANNOTATION),
            Some(keys::TRUE)
        );
        assert_eq!(
            copy["metadata"]["labels"][keys::PROJECT_SCOPED_LABEL],
            project.name.as_str()
        );
    }
    assert!(
        get_secret(&outsider, "test-secret").is_none(),
        "copied outside the project"
    );
    // Copied events on the original name both namespaces (one event per round, not per copy).
    eventually("Copied events naming both namespaces", WAIT, || {
        let messages = event_messages(&project.backing, "test-secret", "Copied");
        (messages.contains(a.as_str()) && messages.contains(b.as_str())).then_some(())
    });
    running.stop();
}

#[test]
fn updates_of_the_original_reach_its_copies_exactly() {
    let _turn = serial();
    let (project, ns, running) = reconciled_member("up");
    apply_original(&project, "db", "user: YQ==, pass: Yg==", "team: blue");
    copy_where(&ns, &project.backing, "db", "the first copy", |s| {
        data(s) == serde_json::json!({"user": "YQ==", "pass": "Yg=="})
            && annotation(s, "team") == Some("blue")
    });
    // A key added, a key removed, a value changed, an annotation changed.
    apply_original(&project, "db", "user: Yw==, host: aA==", "team: green");
    copy_where(&ns, &project.backing, "db", "the updated copy", |s| {
        data(s) == serde_json::json!({"user": "Yw==", "host": "aA=="})
            && annotation(s, "team") == Some("green")
    });
    running.stop();
}

#[test]
fn deleting_the_original_removes_its_copies() {
    let _turn = serial();
    let (project, (a, b), running) = db_copied_into_two_members("del");
    delete_original(&project, "db");
    for ns in [&a, &b] {
        gone(ns, "db");
    }
    running.stop();
}

#[test]
fn namespaces_joining_and_leaving_gain_and_lose_copies() {
    let _turn = serial();
    let project = project("mv");
    let running = reconciling_db(&project);
    let joiner = unique("mv-join");
    ok(kubectl(&["create", "namespace", &joiner]));
    let id = format!("{}={}", keys::PROJECT_ID_KEY, project.id());
    ok(kubectl_line(&format!("annotate namespace {joiner} {id}")));
    copy_where(
        &joiner,
        &project.backing,
        "db",
        "the copy after joining",
        |_| true,
    );
    let leave = format!("{}-", keys::PROJECT_ID_KEY);
    ok(kubectl_line(&format!(
        "annotate namespace {joiner} {leave}"
    )));
    gone(&joiner, "db");
    running.stop();
}

#[test]
fn ignored_namespaces_get_no_copy_and_lose_an_existing_one() {
    let _turn = serial();
    let (project, (a, b), running) = db_copied_into_two_members("ign");
    let ignore = format!("{}: \"{a}\"", keys::IGNORE_NAMESPACES_ANNOTATION);
    apply_original(&project, "db", "k: dg==", &ignore);
    gone(&a, "db");
    assert_copy_kept(
        &b,
        &project.backing,
        "db",
        "the other namespace keeps its copy",
    );
    running.stop();
}

#[test]
fn drift_is_repaired() {
    let _turn = serial();
    let (project, ns, running, first) = db_copied_into_a_member("drift");

    // Edited behind the webhook's back: restored.
    let mut edited = first.clone();
    edited["data"] = serde_json::json!({"k": "ZXZpbA==", "extra": "eA=="});
    let edited = serde_json::to_string(&edited).expect("JSON");
    ok(kubectl_stdin(
        &env().sa_kubeconfig,
        &["replace", "-f", "-"],
        &edited,
    ));
    copy_where(&ns, &project.backing, "db", "the restored copy", |s| {
        data(s) == serde_json::json!({"k": "dg=="})
    });

    // Deleted behind the webhook's back: recreated.
    let before = uid(&get_secret(&ns, "db").expect("the copy"));
    behind_the_webhook(&["delete", "secret", "db", "-n", &ns]);
    copy_where(&ns, &project.backing, "db", "a recreated copy", |s| {
        uid(s) != before
    });
    running.stop();
}

#[test]
fn overwrite_policy_warn_overwrites_and_deny_reports_a_conflict() {
    let _turn = serial();
    let project = project("ow");
    let (a, b) = two_namespaces_in(&project, "ow");
    for ns in [&a, &b] {
        ok(kubectl_line(&format!(
            "create secret generic db -n {ns} --from-literal=mine=1"
        )));
    }
    let mine = get_secret(&a, "db").expect("the user's secret");

    // Deny: neither namespace is written; a Conflict event lands on the original.
    let denying = start(OverwritePolicy::Deny);
    apply_original(&project, "db", "k: dg==", "");
    eventually("a Conflict event on the original", WAIT, || {
        let events = ok(kubectl_line(&format!(
            "get events -n {} --field-selector reason=Conflict -o name",
            project.backing
        )));
        (!events.trim().is_empty()).then_some(())
    });
    denying.stop();
    let untouched = get_secret(&a, "db").expect("still there");
    assert_eq!(data(&untouched), data(&mine), "overwritten without consent");
    assert!(annotation(&untouched, keys::COPY_ANNOTATION).is_none());

    // Warn: both are overwritten by the copy.
    let warning = start(OverwritePolicy::Warn);
    for ns in [&a, &b] {
        copy_where(ns, &project.backing, "db", "the overwriting copy", |s| {
            data(s) == serde_json::json!({"k": "dg=="})
        });
    }
    warning.stop();
}

/// An original held back: a Conflict Event on it says `why`, and its copies in `members` keep the
/// data they had (`dg==`).
fn held_back_with_copies_kept(project: &TestProject, members: [&String; 2], why: &str) {
    eventually("a Conflict event saying why", WAIT, || {
        let events = ok(kubectl_line(&format!(
            "get events -n {} --field-selector reason=Conflict -o jsonpath={{.items[*].message}}",
            project.backing
        )));
        events.contains(why).then_some(())
    });
    for ns in members {
        let kept = get_secret(ns, "db").expect("the copy is kept");
        assert_eq!(
            data(&kept),
            serde_json::json!({"k": "dg=="}),
            "{ns} written"
        );
    }
}

#[test]
fn an_unreadable_ignore_list_keeps_the_copies_and_says_so() {
    let _turn = serial();
    let (project, (a, b), running) = db_copied_into_two_members("unread");
    // Past the webhook (which refuses it; the service account may update, not patch): a list that
    // cannot be read, and new data. Which namespaces the list excludes is unknown: nothing is
    // written or removed, and a Conflict says why.
    let replace_original = |ignore: &str, data: &str| {
        let mut original = get_secret(&project.backing, "db").expect("the original");
        original["metadata"]["annotations"][keys::IGNORE_NAMESPACES_ANNOTATION] = ignore.into();
        original["data"] = serde_json::json!({"k": data});
        ok(kubectl_stdin(
            &env().sa_kubeconfig,
            &["replace", "-f", "-"],
            &original.to_string(),
        ));
    };
    let unreadable = format!("{b}-(");
    replace_original(&unreadable, "bmV3");
    held_back_with_copies_kept(&project, [&a, &b], "annotation cannot be read");
    // Kept means protected, as a wanted copy is (S5): once the webhook's index holds the held-back
    // original, a user's delete of its copy is refused.
    indexed("the original with the unreadable list", |w| {
        w.original_at(&project.backing, "db").is_some_and(|o| {
            world::annotation(&o.secret.metadata, keys::IGNORE_NAMESPACES_ANNOTATION)
                == Some(unreadable.as_str())
        })
    });
    let refused = fails(kubectl_line(&format!(
        "delete secret db -n {a} --dry-run=server"
    )));
    let expected = format!(
        "secret \"db\" in namespace \"{a}\" is a copy of project-scoped secret \"{}/db\"; \
         change the original instead",
        project.backing
    );
    assert!(refused.contains(&expected), "{refused}");

    // Fixed: the list is read again, and what it says is done.
    replace_original(&b, "bmV3");
    gone(&b, "db");
    copy_where(&a, &project.backing, "db", "the updated copy", |s| {
        data(s) == serde_json::json!({"k": "bmV3"})
    });
    running.stop();
}

#[test]
fn an_original_whose_copies_the_webhook_could_never_review_keeps_them_and_says_so() {
    let _turn = serial();
    let (project, (a, b), running) = db_copied_into_two_members("crowd");
    // Past the webhook (which refuses it, S6): more labels than the webhook reads of an object, and
    // new data. Copies like it could never be reviewed again, so never deleted, and their
    // namespaces never finish terminating: none is written, those there are kept, a Conflict says
    // why.
    let replace_original = |extra: usize, data: &str| {
        let mut original = get_secret(&project.backing, "db").expect("the original");
        let labels = original["metadata"]["labels"]
            .as_object_mut()
            .expect("the original's labels");
        labels.retain(|key, _| !key.starts_with("example.com/"));
        for i in 0..extra {
            labels.insert(format!("example.com/l{i}"), "".into());
        }
        original["data"] = serde_json::json!({"k": data});
        ok(kubectl_stdin(
            &env().sa_kubeconfig,
            &["replace", "-f", "-"],
            &original.to_string(),
        ));
    };
    replace_original(keys::MAX_METADATA_ENTRIES, "bmV3");
    held_back_with_copies_kept(&project, [&a, &b], "labels or annotations");

    // Fixed: the copies are written again.
    replace_original(0, "bmV3");
    for ns in [&a, &b] {
        copy_where(ns, &project.backing, "db", "the updated copy", |s| {
            data(s) == serde_json::json!({"k": "bmV3"})
        });
    }
    running.stop();
}

#[test]
fn copies_left_behind_while_stopped_are_cleaned_up() {
    let _turn = serial();
    let (project, ns, running, _) = db_copied_into_a_member("down");
    running.stop();

    delete_original(&project, "db");
    assert!(
        get_secret(&ns, "db").is_some(),
        "nothing should remove copies while stopped"
    );

    let restarted = start(OverwritePolicy::Warn);
    gone(&ns, "db");
    restarted.stop();
}

#[test]
fn type_and_immutability_changes_recreate_copies() {
    let _turn = serial();
    let (project, ns, running, first) = db_copied_into_a_member("ty");
    assert_eq!(first["type"], "Opaque");

    // Immutability differs: the copy is recreated (a new object, a new uid), not edited in place.
    ok(kubectl_line(&format!(
        "patch secret db -n {} --type=merge -p {}",
        project.backing, r#"{"immutable":true}"#
    )));
    let frozen = copy_where(&ns, &project.backing, "db", "an immutable copy", |s| {
        s["immutable"] == true
    });
    assert_ne!(uid(&frozen), uid(&first), "the copy was edited in place");

    // A type can only change by replacing the original.
    delete_original(&project, "db");
    let typed = original_yaml(&project, "db", "k: dg==", "")
        .replace("\ndata:", "\ntype: example.com/custom\ndata:");
    ok(kubectl_apply(&typed, &[]));
    let retyped = copy_where(&ns, &project.backing, "db", "a copy of the new type", |s| {
        s["type"] == "example.com/custom"
    });
    assert_ne!(
        uid(&retyped),
        uid(&frozen),
        "a secret's type cannot change in place"
    );
    running.stop();
}

/// A field of the Lease's spec, as `kubectl get lease` prints it.
fn lease_spec(lease: &str, field: &str) -> std::process::Output {
    kubectl_line(&format!(
        "get lease {lease} -n {LEASE_NAMESPACE} -o jsonpath={{.spec.{field}}}"
    ))
}

fn lease_holder(lease: &str) -> String {
    let out = lease_spec(lease, "holderIdentity");
    if out.status.success() {
        stdout(&out)
    } else {
        String::new()
    }
}

fn lease_renew_time(lease: &str) -> String {
    ok(lease_spec(lease, "renewTime"))
}

/// Merges `patch` (JSON) into the Lease, as the admin.
fn patch_lease(lease: &str, patch: &str) {
    ok(kubectl_line(&format!(
        "patch lease {lease} -n {LEASE_NAMESPACE} --type=merge -p {patch}"
    )));
}

#[test]
fn only_the_lease_holder_writes_and_a_successor_takes_over_on_release() {
    let _turn = serial();
    let (project, ns) = project_with_a_member("le");
    let lease = unique("lease");
    let (one, two) = (unique("one"), unique("two"));
    let mut first = Some(Running::start(&lease, &one, OverwritePolicy::Warn));
    let mut second = Some(Running::start(&lease, &two, OverwritePolicy::Warn));
    let leader = eventually("a leader", WAIT, || {
        let holder = lease_holder(&lease);
        (holder == one || holder == two).then_some(holder)
    });
    apply_original(&project, "db", "k: dg==", "");
    copy_where(&ns, &project.backing, "db", "the copy", |_| true);
    let (leading, following) = if leader == one {
        (&first, &second)
    } else {
        (&second, &first)
    };
    let writes = |r: &Option<Running>| r.as_ref().map_or(0.0, Running::writes);
    assert!(writes(leading) >= 1.0, "the leader wrote the copy");
    // Watch the follower for long enough to fail: several changes, each one debounce period and a
    // round of the leader's, and past two lease renewals (every 5 s), during which a follower that
    // planned or wrote would show rounds, writes, errors or requeues of its own.
    let renewed = lease_renew_time(&lease);
    for (i, data) in ["k: MQ==", "k: Mg==", "k: Mw=="].into_iter().enumerate() {
        apply_original(&project, "db", data, "");
        let want = data.trim_start_matches("k: ");
        copy_where(&ns, &project.backing, "db", &format!("update {i}"), |s| {
            s["data"]["k"] == want
        });
    }
    let mut last = renewed;
    for renewal in ["a lease renewal", "another lease renewal"] {
        last = eventually(renewal, WAIT, || {
            let now = lease_renew_time(&lease);
            (now != last).then_some(now)
        });
    }
    let follower = following.as_ref().expect("the follower runs");
    for metric in ROUND_COUNTERS {
        assert_eq!(follower.metric(metric), 0.0, "the follower's {metric}");
    }

    // The leader stops: it releases the lease, and the other instance takes over and writes.
    let (leaving, staying) = if leader == one {
        (&mut first, &two)
    } else {
        (&mut second, &one)
    };
    if let Some(running) = leaving.take() {
        running.stop();
    }
    eventually("the successor to hold the lease", WAIT, || {
        (lease_holder(&lease) == *staying).then_some(())
    });
    apply_original(&project, "db", "k: bmV3", "");
    copy_where(
        &ns,
        &project.backing,
        "db",
        "the copy updated by the successor",
        |s| data(s) == serde_json::json!({"k": "bmV3"}),
    );
    for running in [first, second].into_iter().flatten() {
        running.stop();
    }
    assert_eq!(
        lease_holder(&lease),
        "",
        "the lease is released on shutdown"
    );
}

#[test]
fn a_converged_world_makes_no_writes() {
    let _turn = serial();
    let (project, ns, running, copy) = db_copied_into_a_member("calm");
    let version = copy["metadata"]["resourceVersion"].clone();
    // Let the rounds woken by the copy's own watch events pass: once the reconciler's index holds
    // the copy, a round woken by a change that concerns no secret plans from a world that has it.
    // (Waiting for a round without causing one raced: the copy's events may all be handled already.)
    eventually("the copy in the reconciler's index", WAIT, || {
        running.index.read().scoped(&ns, "db").map(|_| ())
    });
    let settled = running.rounds();
    ok(kubectl_line(&format!(
        "annotate namespace {ns} example.com/settle=1"
    )));
    eventually("a round after the copy landed", WAIT, || {
        (running.rounds() > settled).then_some(())
    });
    let writes = running.writes();
    let rounds = running.rounds();
    // Checked at the apiserver too, which the product's counter would not see a write it did not
    // mean through: every secret of the project's namespaces, with its uid and resourceVersion (a
    // write to any of them changes its entry). Not the apiserver's cluster-wide write count: what
    // earlier tests left behind lands in it (8 writes counted where these 3 were made, in .ci/run).
    let namespaces = [ns.as_str(), project.backing.as_str()];
    let before = secret_versions(&namespaces);

    // Unrelated changes wake the reconciler; it plans, finds nothing to do, and writes nothing.
    for i in 0..3 {
        let name = format!("unrelated-{i}");
        ok(kubectl_line(&format!(
            "create secret generic {name} -n {ns} --from-literal=a=b"
        )));
    }
    eventually("rounds after the unrelated changes", WAIT, || {
        (running.rounds() > rounds).then_some(())
    });
    assert_eq!(running.writes(), writes, "writes in a converged world");
    let mut after = secret_versions(&namespaces);
    let created: Vec<String> = (0..3)
        .filter_map(|i| after.remove_entry(&format!("{ns}/unrelated-{i}")))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(created.len(), 3, "the test's three creates: {created:?}");
    assert_eq!(
        after, before,
        "secrets at the apiserver: the test's three creates and nothing else"
    );
    let again = get_secret(&ns, "db").expect("the copy");
    assert_eq!(
        again["metadata"]["resourceVersion"], version,
        "the copy was rewritten"
    );
    running.stop();
}

/// Every secret of `namespaces` (`namespace/name`) with its uid and resourceVersion, as the
/// apiserver has them.
fn secret_versions(namespaces: &[&str]) -> std::collections::BTreeMap<String, (String, String)> {
    let fields = r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.metadata.resourceVersion}{"\n"}{end}"#;
    let mut versions = std::collections::BTreeMap::new();
    for ns in namespaces {
        let listed = ok(kubectl(&["get", "secrets", "-n", ns, "-o", fields]));
        for line in listed.lines() {
            let mut words = line.split_whitespace();
            if let (Some(name), Some(uid), Some(version)) =
                (words.next(), words.next(), words.next())
            {
                versions.insert(format!("{ns}/{name}"), (uid.to_owned(), version.to_owned()));
            }
        }
    }
    versions
}

#[test]
fn projects_without_a_backing_namespace_get_one() {
    let _turn = serial();
    let name = unique("bare");
    bare_project("local", &name);
    let running = start(OverwritePolicy::Warn);
    let backing = format!("local-{name}");
    eventually("status.backingNamespace", WAIT, || {
        let out = kubectl(&[
            "get",
            "project",
            &name,
            "-n",
            "local",
            "-o",
            "jsonpath={.status.backingNamespace}",
        ]);
        (stdout(&out) == backing).then_some(())
    });
    ok(kubectl(&["get", "namespace", &backing]));
    running.stop();
}

#[test]
fn labels_written_behind_the_webhook_are_repaired() {
    let _turn = serial();
    let (project, ns, running) = reconciled_member("lbl");

    // A namespace label that disagrees with its annotation is set back from the annotation.
    let wrong = format!("{}=p-wrong", keys::PROJECT_ID_KEY);
    behind_the_webhook(&["label", "namespace", &ns, &wrong, "--overwrite"]);
    let label_path = format!(
        "jsonpath={{.metadata.labels.{}}}",
        keys::PROJECT_ID_KEY.replace('.', "\\.")
    );
    eventually("the namespace label repaired", WAIT, || {
        let out = kubectl(&["get", "namespace", &ns, "-o", &label_path]);
        (stdout(&out) == project.name).then_some(())
    });

    // An original created without the mutator gets its cluster label (and is copied).
    let original = original_yaml(&project, "db", "k: dg==", "");
    ok(kubectl_stdin(
        &env().sa_kubeconfig,
        &["create", "-f", "-"],
        &original,
    ));
    eventually("the cluster label on the original", WAIT, || {
        let secret = get_secret(&project.backing, "db")?;
        (secret["metadata"]["labels"][keys::PROJECT_SCOPED_CLUSTER_LABEL] == "local").then_some(())
    });
    copy_where(&ns, &project.backing, "db", "the copy", |s| {
        s["metadata"]["labels"][keys::PROJECT_SCOPED_CLUSTER_LABEL] == "local"
    });
    running.stop();
}

/// `scoped-secrets plan` against the live cluster, as the admin, with `serve`'s defaults.
fn plan_text(manifest: Option<&std::path::Path>) -> String {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let admin = client(&env().kubeconfig).await.expect("an admin client");
        scoped_secrets::report::plan_command(
            Some(admin),
            manifest,
            false,
            true,
            &Settings::default(),
            &Default::default(),
        )
        .await
        .expect("plan")
        .text
    })
}

#[test]
fn plan_previews_what_the_reconciler_then_does() {
    let _turn = serial();
    let (project, ns) = project_with_a_member("plan");
    apply_original(&project, "db", "k: dg==", "");
    let line = format!("{ns}/db (from {}/db)", project.backing);
    let before = plan_text(None);
    assert!(before.contains("Copies to create"), "{before}");
    assert!(before.contains(&line), "{before}");
    assert!(
        !before.contains("dg=="),
        "secret data in the plan: {before}"
    );

    // A manifest laid over the cluster: a second namespace joining shows up as one more copy.
    let joiner = unique("plan-b");
    let manifest = format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {joiner}
  annotations: {{{key}: \"{id}\"}}
  labels: {{{key}: {name}}}
",
        key = keys::PROJECT_ID_KEY,
        id = project.id(),
        name = project.name,
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("join.yaml");
    std::fs::write(&path, manifest).expect("the manifest is written");
    let with_manifest = plan_text(Some(&path));
    assert!(
        with_manifest.contains(&format!("{joiner}/db (from")),
        "{with_manifest}"
    );

    let running = start(OverwritePolicy::Warn);
    copy_where(&ns, &project.backing, "db", "the copy", |_| true);
    running.stop();
    let after = plan_text(None);
    assert!(
        !after.contains(&line),
        "still planned after the copy landed: {after}"
    );
}

/// The bytes of a short base64 literal used in these tests.
fn decode(base64: &str) -> Vec<u8> {
    match base64 {
        "dg==" => b"v".to_vec(),
        "MQ==" => b"1".to_vec(),
        "Mg==" => b"2".to_vec(),
        other => panic!("no decoding for {other}"),
    }
}

#[test]
fn a_lost_lease_stops_writes_at_once_and_a_regained_one_resumes_them() {
    let _turn = serial();
    let (project, ns) = project_with_a_member("lost");
    let lease = unique("lease");
    let running = Running::start(&lease, &unique("holder"), OverwritePolicy::Warn);
    let leader_gauge = "scoped_secrets_reconciler_leader";
    eventually("leadership", WAIT, || {
        (running.metric(leader_gauge) == 1.0).then_some(())
    });

    // Someone else takes the lease: the instance sees it at its next renewal and steps down.
    let usurp = r#"{"spec":{"holderIdentity":"usurper","leaseDurationSeconds":3600}}"#;
    patch_lease(&lease, usurp);
    eventually("stepping down", WAIT, || {
        (running.metric(leader_gauge) == 0.0).then_some(())
    });
    let before = ROUND_COUNTERS.map(|m| running.metric(m));
    // Several changes, each seen by the instance's index (so each would have woken a round after
    // its debounce): a stepped-down instance plans nothing, writes nothing, fails nothing.
    let backing = project.backing.clone();
    for data in ["dg==", "MQ==", "Mg=="] {
        apply_original(&project, "db", &format!("k: {data}"), "");
        eventually("the change in the index", WAIT, || {
            let world = running.index.read();
            let original = world.original_at(&backing, "db")?;
            (original.secret.data.as_ref()?.get("k")?.0 == decode(data)).then_some(())
        });
    }
    assert!(get_secret(&ns, "db").is_none(), "a follower wrote a copy");
    let after = ROUND_COUNTERS.map(|m| running.metric(m));
    assert_eq!(
        after, before,
        "a stepped-down instance's {ROUND_COUNTERS:?}"
    );

    // The lease is freed: the instance takes it again and catches up.
    let free = r#"{"spec":{"holderIdentity":""}}"#;
    patch_lease(&lease, free);
    copy_where(
        &ns,
        &project.backing,
        "db",
        "the copy after regaining the lease",
        |_| true,
    );
    running.stop();
}

#[test]
fn protected_namespaces_never_receive_copies() {
    let _turn = serial();
    let (project, member) = project_with_a_member("prot");
    // kube-public joined behind the webhook's back (the guard refuses it): the reconciler must
    // still never copy there.
    let annotation = format!("{}={}", keys::PROJECT_ID_KEY, project.id());
    behind_the_webhook(&[
        "annotate",
        "namespace",
        "kube-public",
        &annotation,
        "--overwrite",
    ]);
    let running = reconciling_db(&project);
    copy_where(&member, &project.backing, "db", "the copy", |_| true);
    // Rounds run one after another: once a second round's write is visible, the first round,
    // which would have written kube-public's copy alongside the member's, has ended.
    apply_original(&project, "db", "k: Y2F0", "");
    copy_where(&member, &project.backing, "db", "the updated copy", |s| {
        s["data"]["k"] == "Y2F0"
    });
    assert_eq!(get_secret("kube-public", "db"), None);
    running.stop();
    let removed = format!("{}-", keys::PROJECT_ID_KEY);
    behind_the_webhook(&["annotate", "namespace", "kube-public", &removed]);
}

// Backing-namespace ownership (issue 9, item 2), sharing this module's helpers and turns.
#[path = "projects.rs"]
mod projects;

// Namespace lifecycles with a real namespace controller (issue 10), sharing this module's helpers
// and turns.
#[path = "lifecycle_namespaces.rs"]
mod lifecycle_namespaces;
