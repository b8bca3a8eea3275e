//! The Project CRD deleted and installed again while scoped-secrets runs. A test binary of its own,
//! so a control plane of its own: without the CRD every other test's projects would be gone.
//!
//! While the CRD is not served, namespaces may name any project (N2 cannot check existence) and no
//! copy is touched, even though deleting a CRD deletes every Project with it; once it is served
//! again, projects are indexed within seconds.

use scoped_secrets::index::Index;
use scoped_secrets::keys::{self, ProjectId};
use std::time::{Duration, Instant};
use testbed::harness::*;
use testbed::prelude::*;

const CRD: &str = "projects.management.cattle.io";

fn uid(secret: &serde_json::Value) -> String {
    secret["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn join(namespace: &str, project: &str) -> std::process::Output {
    let annotation = format!("{}=local:{project}", keys::PROJECT_ID_KEY);
    kubectl(&[
        "annotate",
        "namespace",
        namespace,
        &annotation,
        "--overwrite",
    ])
}

#[test]
fn the_project_crd_can_go_and_come_back() {
    let project = project("crd");
    let ns = namespace_in(&project, "crd-a");
    let running = reconciling_db(&project);
    let copy_uid = uid(&copy_where(&ns, &project.backing, "db", "the copy", |_| {
        true
    }));
    let indexes: [(&str, &Index); 2] = [("webhook", &env().index), ("reconciler", &running.index)];

    // Deleting the CRD deletes every Project: neither that nor the failing watch removes a copy.
    // A second project held by a finalizer keeps the CRD terminating meanwhile, so the reconciler
    // sees our project's Delete event while the resource is still served (its GET answers 404 for
    // the object): only discovery tells that the whole CRD is going.
    let held = unique("crd-held");
    ok(kubectl_apply(
        &format!(
            "apiVersion: management.cattle.io/v3
kind: Project
metadata: {{name: {held}, namespace: local, finalizers: [example.com/hold]}}
spec: {{clusterName: local}}
"
        ),
        &[],
    ));
    ok(kubectl(&["delete", "crd", CRD, "--wait=false"]));
    let id = ProjectId::new("local", project.name.clone());
    eventually("the reconciler to see the project deleted", WAIT, || {
        running.index.read().project(&id).is_none().then_some(())
    });
    // Long enough for a first attempt to prove the deletion and the retry 10 s later.
    let terminating = Instant::now() + Duration::from_secs(12);
    while Instant::now() < terminating {
        let copy = get_secret(&ns, "db").expect("the copy stays while the CRD is terminating");
        assert_eq!(uid(&copy), copy_uid, "the copy was replaced");
        std::thread::park_timeout(Duration::from_millis(500));
    }
    ok(kubectl_line(&format!(
        "patch project {held} -n local --type=merge -p {}",
        r#"{"metadata":{"finalizers":null}}"#
    )));
    for (which, index) in indexes {
        eventually(&format!("the {which} index to see no CRD"), WAIT, || {
            (!index.read().projects_installed).then_some(())
        });
    }
    let joiner = unique("crd-join");
    ok(kubectl(&["create", "namespace", &joiner]));
    ok(join(&joiner, "p-nowhere"));
    // The CRD stays away for 20 s (long enough for a default watch backoff to grow past 5 s); the
    // copy must stay all along, across the rounds the changes above woke.
    let rounds = running.rounds();
    let away = Instant::now() + Duration::from_secs(20);
    while Instant::now() < away {
        let copy = get_secret(&ns, "db").expect("the copy stays while the CRD is gone");
        assert_eq!(uid(&copy), copy_uid, "the copy was replaced");
        std::thread::park_timeout(Duration::from_millis(500));
    }
    assert!(
        running.rounds() > rounds,
        "no round ran while the CRD was gone"
    );

    // Installed again: the project, re-created as soon as the CRD serves it, is indexed within 5 s.
    // It is another Project object (another uid): the backing namespace's marks name the deleted
    // one, and no project may be created under a name whose namespace is marked for an earlier
    // object (P3), so restoring it starts by removing them.
    let marks = [
        keys::BACKING_NAMESPACE_OF_ANNOTATION,
        keys::BACKING_NAMESPACE_UID_ANNOTATION,
    ];
    let mut unmark = vec!["annotate", "namespace", project.backing.as_str()];
    let removals: Vec<String> = marks.iter().map(|key| format!("{key}-")).collect();
    unmark.extend(removals.iter().map(String::as_str));
    ok(kubectl(&unmark));
    let crd = std::path::Path::new(REPO).join("deploy/base/crd-project.yaml");
    ok(kubectl(&["create", "-f", &crd.to_string_lossy()]));
    let recreate = format!(
        "apiVersion: management.cattle.io/v3
kind: Project
metadata: {{name: {}, namespace: local}}
spec: {{clusterName: local}}
",
        project.name
    );
    eventually("the CRD to serve projects", WAIT, || {
        kubectl_apply(&recreate, &[]).status.success().then_some(())
    });
    let served = Instant::now();
    for (which, index) in indexes {
        eventually(
            &format!("the project in the {which} index"),
            Duration::from_secs(5).saturating_sub(served.elapsed()),
            || index.read().project(&id).map(|_| ()),
        );
    }
    // Marked for the new object, its backing namespace is its own again.
    let new_uid = project_field("local", &project.name, "{.metadata.uid}");
    ok(kubectl(&[
        "annotate",
        "namespace",
        &project.backing,
        &format!("{}={}", marks[0], id),
        &format!("{}={}", marks[1], new_uid.trim()),
    ]));
    let status = format!(
        r#"{{"status":{{"backingNamespace":"{}"}}}}"#,
        project.backing
    );
    ok(kubectl_line(&format!(
        "patch project {} -n local --subresource=status --type=merge -p {status}",
        project.name
    )));
    // N2 checks existence again, and the copy is still the one from before.
    let stranger = unique("crd-stranger");
    ok(kubectl(&["create", "namespace", &stranger]));
    let denied = fails(join(&stranger, "p-nowhere"));
    assert!(denied.contains("no such project exists"), "{denied}");
    let copy = get_secret(&ns, "db").expect("the copy survived the CRD's absence");
    assert_eq!(uid(&copy), copy_uid);
    eventually("the restored project to own its namespace", WAIT, || {
        (running.index.read().backing_project(&project.backing) == Some(&id)).then_some(())
    });
    running.stop();
}
