//! N1: joining a project needs manage-namespaces.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use testbed::prelude::*;

#[test]
fn n1_joining_a_project_needs_manage_namespaces() {
    let project = project("n1");
    grant_namespace_editing(&project);

    // bob may edit namespaces but not manage the project's: denied, dry run or not.
    let bobs = unique("n1-bob");
    let yaml = namespace_yaml(&bobs, &project.id());
    let expected = format!(
        "user \"bob\" may not move namespace \"{bobs}\" into project {}: that needs verb \
         manage-namespaces on projects.management.cattle.io \"{}\" in namespace \"local\"",
        project.id(),
        project.name
    );
    for dry_run in [&["--dry-run=server"][..], &[]] {
        let err = fails(apply_as("bob", &yaml, dry_run));
        assert_denied(&err, NAMESPACE_GUARD, &expected);
    }
    fails(kubectl_line(&format!("get namespace {bobs}")));

    // Nor may bob move an existing namespace of his into the project.
    let plain = unique("n1-plain");
    ok(apply_as(
        "bob",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {plain}}}\n"),
        &[],
    ));
    let err = fails(kubectl(&[
        "annotate",
        "namespace",
        &plain,
        &format!("{}={}", keys::PROJECT_ID_KEY, project.id()),
        "--as=bob",
    ]));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "user \"bob\" may not move namespace \"{plain}\" into project {}",
            project.id()
        ),
    );

    // alice may: allowed, dry run or not, and the mutator mirrors the annotation in the label.
    let alices = unique("n1-alice");
    let yaml = namespace_yaml(&alices, &project.id());
    let dry = ok(apply_as(
        "alice",
        &yaml,
        &["--dry-run=server", "-o", "yaml"],
    ));
    assert!(
        dry.contains(&format!("{}: {}", keys::PROJECT_ID_KEY, project.name)),
        "{dry}"
    );
    fails(kubectl_line(&format!("get namespace {alices}")));
    let out = ok(apply_as("alice", &yaml, &[]));
    assert!(
        out.contains(&format!("namespace/{alices} created")),
        "{out}"
    );

    // alice's grant names this project only: another project is still refused.
    let other = testbed::prelude::project("n1-other");
    let elsewhere = unique("n1-alice");
    let err = fails(apply_as(
        "alice",
        &namespace_yaml(&elsewhere, &other.id()),
        &[],
    ));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "user \"alice\" may not move namespace \"{elsewhere}\" into project {}: that needs \
             verb manage-namespaces on projects.management.cattle.io \"{}\" in namespace \"local\"",
            other.id(),
            other.name
        ),
    );
}

#[test]
fn n1_the_status_subresource_is_no_way_around_manage_namespaces() {
    // A namespace's status subresource also writes its metadata: bob, who may update namespace
    // status but not manage the project's namespaces, must not join a project through it.
    let project = project("n1s");
    grant_namespace_editing(&project);
    let status_patch = |ns: &str, user: &str| {
        kubectl(&[
            "patch",
            "namespace",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(
                r#"{{"metadata":{{"annotations":{{"{}":"{}"}}}}}}"#,
                keys::PROJECT_ID_KEY,
                project.id()
            ),
            &format!("--as={user}"),
        ])
    };
    let bobs = plain_namespace("n1s-bob");
    let err = fails(status_patch(&bobs, "bob"));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "user \"bob\" may not move namespace \"{bobs}\" into project {}: that needs verb \
             manage-namespaces on projects.management.cattle.io \"{}\" in namespace \"local\"",
            project.id(),
            project.name
        ),
    );
    let annotations = ok(kubectl(&[
        "get",
        "namespace",
        &bobs,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]));
    assert!(!annotations.contains(keys::PROJECT_ID_KEY), "{annotations}");

    // Nor through the finalize subresource, which writes metadata as well.
    let mut namespace: serde_json::Value =
        serde_json::from_str(&ok(kubectl_line(&format!("get namespace {bobs} -o json"))))
            .expect("a namespace as JSON");
    namespace["metadata"]["annotations"] = serde_json::json!({keys::PROJECT_ID_KEY: project.id()});
    let err = fails(kubectl_stdin(
        &env().kubeconfig,
        &[
            "replace",
            "--raw",
            &format!("/api/v1/namespaces/{bobs}/finalize"),
            "-f",
            "-",
            "--as=bob",
        ],
        &namespace.to_string(),
    ));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "user \"bob\" may not move namespace \"{bobs}\" into project {}",
            project.id()
        ),
    );

    // alice may, and the mutator mirrors the annotation in the label there too.
    let alices = plain_namespace("n1s-alice");
    ok(status_patch(&alices, "alice"));
    let label = ok(kubectl(&[
        "get",
        "namespace",
        &alices,
        "-o",
        "jsonpath={.metadata.labels.field\\.cattle\\.io/projectId}",
    ]));
    assert_eq!(label, project.name);
}
