//! N2: well-formed project IDs naming existing projects.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys::{self, ProjectId};
use testbed::prelude::*;

#[test]
fn n2_a_malformed_project_id_is_denied() {
    for value in ["local:", ":p-abc", "p-abc"] {
        let ns = unique("n2m");
        let err = fails(kubectl_apply(&namespace_yaml(&ns, value), &[]));
        let parse_error = ProjectId::parse(value)
            .expect_err("a malformed project ID")
            .to_string();
        assert_denied(
            &err,
            NAMESPACE_GUARD,
            &format!(
                "annotation {} on namespace \"{ns}\": {parse_error}; both parts must be non-empty, \
                 e.g. local:p-vwxyz",
                keys::PROJECT_ID_KEY
            ),
        );
        fails(kubectl_line(&format!("get namespace {ns}")));
    }
}

#[test]
fn n2_an_unknown_project_is_denied() {
    let ns = unique("n2u");
    let missing = unique("p-missing");
    let err = fails(kubectl_apply(
        &namespace_yaml(&ns, &format!("local:{missing}")),
        &[],
    ));
    assert_denied(
        &err,
        NAMESPACE_GUARD,
        &format!(
            "namespace \"{ns}\" names project local:{missing} in annotation {}, but no such \
             project exists",
            keys::PROJECT_ID_KEY
        ),
    );
}
