//! N1 fails closed: when the webhook cannot ask the apiserver whether a user may manage a project's
//! namespaces (its SubjectAccessReview is refused), no namespace joins the project, not even one of
//! a user who may. A test binary of its own (a control plane of its own): it takes a permission
//! from the product's identity, which the other suites' reviews need.

use scoped_secrets::keys;
use serde_json::Value;
use testbed::control_plane::SERVICE_ACCOUNT_USER;
use testbed::prelude::*;

/// The product's ClusterRole (deploy/base/rbac.yaml), as the test bed applied it.
const PRODUCT_ROLE: &str = "scoped-secrets";

fn replace(object: &Value) {
    ok(kubectl_stdin(
        &env().kubeconfig,
        &["replace", "-f", "-"],
        &object.to_string(),
    ));
}

#[test]
fn joining_a_project_is_refused_while_access_cannot_be_verified() {
    let project = project("closed");
    ok(kubectl_apply(
        &testbed::rbac::namespace_editor("closed-editor", "namespaces", &["alice"]),
        &[],
    ));
    ok(kubectl_apply(
        &testbed::rbac::project_namespace_manager("closed-manage", "local", &project.name, "alice"),
        &[],
    ));
    let manage = format!(
        "{} {}.{}/{} -n local",
        keys::MANAGE_NAMESPACES_VERB,
        keys::PROJECT_PLURAL,
        keys::PROJECT_GROUP,
        project.name
    );
    eventually("alice's grant", std::time::Duration::from_secs(20), || {
        (can_i("alice", &manage) == "yes").then_some(())
    });

    // The product's identity loses SubjectAccessReviews.
    let role: Value = serde_json::from_str(&ok(kubectl_line(&format!(
        "get clusterrole {PRODUCT_ROLE} -o json"
    ))))
    .expect("the role as JSON");
    let mut without = role.clone();
    if let Some(rules) = without["rules"].as_array_mut() {
        rules.retain(|rule| rule["resources"] != serde_json::json!(["subjectaccessreviews"]));
    }
    assert_ne!(without, role, "the role grants SubjectAccessReviews");
    replace(&without);
    let reviews = "create subjectaccessreviews.authorization.k8s.io";
    eventually(
        "the lost permission",
        std::time::Duration::from_secs(20),
        || (can_i(SERVICE_ACCOUNT_USER, reviews) == "no").then_some(()),
    );

    let ns = unique("closed-ns");
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  annotations: {{{}: \"{}\"}}\n",
        keys::PROJECT_ID_KEY,
        project.id()
    );
    let join = || {
        kubectl_stdin(
            &env().kubeconfig,
            &["apply", "-f", "-", "--as=alice"],
            &yaml,
        )
    };
    let err = fails(join());
    assert!(
        err.contains(&format!(
            "(ProjectAccessUnverified): error when creating \"STDIN\": admission webhook \
             \"namespace-guard.scoped-secrets.io\" denied the request: could not verify that user \
             \"alice\" may move namespace \"{ns}\" into project {}",
            project.id()
        )),
        "{err}"
    );
    fails(kubectl_line(&format!("get namespace {ns}")));

    // Given back: alice's namespace joins.
    let mut restored = role;
    restored["metadata"]["resourceVersion"] = Value::Null;
    replace(&restored);
    eventually(
        "the join, once verifiable",
        std::time::Duration::from_secs(20),
        || join().status.success().then_some(()),
    );
}
