//! Backing namespaces belong to exactly one project, as the reconciler sees it (issue 9, item 2): a
//! bare Project gets a generated namespace marked for it; names that once collided no longer do; a
//! claim that slipped past admission (written as the reconciler's identity, which the project guard
//! lets through) of a namespace marked for another project takes nothing, and nothing is deleted
//! because of it; a deleted backing namespace is made again, marked, and one someone else made
//! first is not adopted; one deleted with its project is not made again.
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

/// Deletes `namespace` and returns once it is gone (the test bed's controller manager empties it).
fn delete_namespace_and_wait(namespace: &str) {
    ok(kubectl(&[
        "delete",
        "namespace",
        namespace,
        "--wait=true",
        "--timeout=120s",
    ]));
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
fn a_claim_past_admission_of_a_namespace_marked_for_another_project_takes_nothing() {
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
    // The namespace is marked for the victim: the claim counts for nothing, and says so.
    let taken = format!("False,{}", keys::BACKING_NAMESPACE_TAKEN);
    eventually(
        "the Taken condition on the attacker's project",
        WAIT,
        || (backing_ready("local", &evil) == taken).then_some(()),
    );
    let victim_id = ProjectId::new("local", victim.name.clone());
    assert_eq!(
        running.index.read().backing_project(&victim.backing),
        Some(&victim_id)
    );
    // A full round later the victim's copy is still there, and its project was never contested.
    // Any change wakes the reconciler for a round that plans the whole world again.
    running.another_round(&member);
    assert!(
        get_secret(&member, "db").is_some_and(|s| is_copy_of(&s, &victim.backing, "db")),
        "the victim's copy was removed"
    );
    assert_eq!(backing_ready("local", &victim.name), ",");
    // The attacker records a name the reconciler does not give: it is not made, and that is said.
    patch_status_past_the_guard(&evil, "somewhere-else");
    let missing = format!("False,{}", keys::BACKING_NAMESPACE_MISSING);
    eventually(
        "the Missing condition on the attacker's project",
        WAIT,
        || (backing_ready("local", &evil) == missing).then_some(()),
    );
    assert!(
        fails(kubectl(&["get", "namespace", "somewhere-else"])).contains("NotFound"),
        "the reconciler made a namespace someone else named"
    );
    running.stop();
}

#[test]
fn a_deleted_backing_namespace_is_made_again_marked_and_one_made_by_someone_else_is_not_adopted() {
    let _turn = serial();
    let (victim, member, running) = victim_with_a_copy("made-again", "again-a");
    let victim_id = ProjectId::new("local", victim.name.clone());
    let uid = project_field("local", &victim.name, "{.metadata.uid}");
    // Deleted (its original with it): the reconciler makes it again at once, marked, so that its
    // name is not left to whoever may create namespaces.
    ok(kubectl(&[
        "delete",
        "namespace",
        &victim.backing,
        "--wait=false",
    ]));
    eventually("the backing namespace made again, marked", WAIT, || {
        let world = running.index.read();
        let made_again = world
            .namespace(&victim.backing)
            .is_some_and(|ns| !ns.terminating && ns.is_marked_for(&victim_id, &uid));
        made_again.then_some(())
    });
    assert_eq!(marker(&victim.backing), victim_id.to_string());
    eventually("the copy of the deleted original removed", WAIT, || {
        get_secret(&member, "db").is_none().then_some(())
    });

    // Someone deletes it again and makes it first, unmarked: it is not the project's, and the
    // project says why.
    running.stop();
    delete_namespace_and_wait(&victim.backing);
    ok(kubectl(&["create", "namespace", &victim.backing]));
    let running = start(OverwritePolicy::Warn);
    let taken = format!("False,{}", keys::BACKING_NAMESPACE_TAKEN);
    eventually("the Taken condition", WAIT, || {
        (backing_ready("local", &victim.name) == taken).then_some(())
    });
    assert_eq!(running.index.read().backing_project(&victim.backing), None);
    // An original planted there (past the webhook, which refuses the label there) is copied
    // nowhere.
    ok(kubectl_stdin(
        &env().sa_kubeconfig,
        &["apply", "-f", "-"],
        &original_yaml(&victim, "planted", "key: ZG9n", ""),
    ));
    // Any change wakes the reconciler for a round that plans the whole world again.
    running.another_round(&member);
    assert!(
        get_secret(&member, "planted").is_none(),
        "a planted original was copied"
    );
    running.stop();
}

#[test]
fn a_project_created_again_under_its_name_does_not_keep_the_deleted_ones_copies() {
    let _turn = serial();
    let (victim, member, running) = victim_with_a_copy("replaced", "replaced-a");
    // Deleted and created again at once (`kubectl replace --force`), past the project guard: another
    // Project object under the same name, which inherits neither the namespace nor the copies.
    ok(kubectl_stdin(
        &env().kubeconfig,
        &[
            "replace",
            "--force",
            "-f",
            "-",
            "--as=system:serviceaccount:scoped-secrets-system:scoped-secrets",
            "--as-group=system:masters",
        ],
        &project_yaml("local", &victim.name),
    ));
    eventually("the deleted project's copy removed", WAIT, || {
        get_secret(&member, "db").is_none().then_some(())
    });
    // Its original stays where it was (originals are never deleted), and the new object does not
    // get the namespace marked for the deleted one.
    assert!(get_secret(&victim.backing, "db").is_some());
    let taken = format!("False,{}", keys::BACKING_NAMESPACE_TAKEN);
    eventually("the Taken condition on the new object", WAIT, || {
        (backing_ready("local", &victim.name) == taken).then_some(())
    });
    running.stop();
}

/// A project on its way out gets no backing namespace: one deleted alongside it (as when a
/// cluster's namespace and its projects' namespaces are deleted together) is not made again,
/// where it would outlive the project.
#[test]
fn a_backing_namespace_deleted_with_its_project_is_not_made_again() {
    let _turn = serial();
    let (victim, member, running) = victim_with_a_copy("going", "going-a");
    let victim_id = ProjectId::new("local", victim.name.clone());
    // A finalizer holds the Project while it is deleted, as Rancher's controllers do.
    let hold = |finalizers: &str| {
        ok(kubectl_line(&format!(
            "patch project {} -n local --type=merge -p {{\"metadata\":{{\"finalizers\":{finalizers}}}}}",
            victim.name
        )))
    };
    hold("[\"example.com/hold\"]");
    ok(kubectl(&[
        "delete",
        "project",
        &victim.name,
        "-n",
        "local",
        "--wait=false",
    ]));
    eventually(
        "the reconciler to see the project being deleted",
        WAIT,
        || {
            let world = running.index.read();
            world
                .project(&victim_id)
                .is_some_and(|p| p.deleting)
                .then_some(())
        },
    );
    delete_namespace_and_wait(&victim.backing);
    eventually("the reconciler to see the namespace gone", WAIT, || {
        running
            .index
            .read()
            .namespace(&victim.backing)
            .is_none()
            .then_some(())
    });
    // Rounds are counted once planned: the second after this point plans from a world without the
    // namespace, and the third starts only once the second's writes are done.
    for _ in 0..3 {
        running.another_round(&member);
    }
    assert!(
        fails(kubectl(&["get", "namespace", &victim.backing])).contains("NotFound"),
        "the backing namespace of a project being deleted was made again"
    );
    hold("null");
    eventually("the project gone", WAIT, || {
        let out = kubectl(&[
            "get",
            "project",
            &victim.name,
            "-n",
            "local",
            "--ignore-not-found",
        ]);
        stdout(&out).trim().is_empty().then_some(())
    });
    running.stop();
}
