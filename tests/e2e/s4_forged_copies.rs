//! S4: no forged copies.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use testbed::prelude::*;

#[test]
fn s4_creating_a_secret_with_a_copy_marker_is_denied() {
    let ns = plain_namespace("s4c");
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: forged
  namespace: {ns}
  annotations: {{{copy}: \"true\"}}
data: {{key: ZG9n}}
",
        copy = keys::COPY_ANNOTATION
    );
    let err = fails(kubectl_apply(&yaml, &[]));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "only the scoped-secrets reconciler may set copy markers; remove annotation {} from \
             secret \"forged\" in namespace \"{ns}\"",
            keys::COPY_ANNOTATION
        ),
    );
    fails(kubectl_line(&format!("get secret forged -n {ns}")));
}

#[test]
fn s4_adding_a_copy_marker_to_an_existing_secret_is_denied() {
    let ns = plain_namespace("s4a");
    generic(&ns, "mine");
    for key in [keys::COPY_ANNOTATION, keys::ORIGIN_ANNOTATION] {
        let err = fails(kubectl(&[
            "annotate",
            "secret",
            "mine",
            "-n",
            &ns,
            &format!("{key}=true"),
        ]));
        assert_denied(
            &err,
            GUARD,
            &format!(
                "only the scoped-secrets reconciler may set copy markers; remove annotation {key} \
                 from secret \"mine\" in namespace \"{ns}\""
            ),
        );
    }
    // An ordinary annotation is fine.
    ok(kubectl_line(&format!(
        "annotate secret mine -n {ns} team=a"
    )));
}
