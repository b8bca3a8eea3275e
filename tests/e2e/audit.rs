//! Audit mode: a second server, registered for one namespace the shared server leaves out.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use scoped_secrets::message;
use std::time::Duration;
use testbed::prelude::*;

#[test]
fn audit_mode_admits_with_would_deny_warnings() {
    let audit = start_extra_server(|args| args.mode = scoped_secrets::cli::ModeArg::Audit);
    // deploy/'s configurations leave out the webhook's own namespace; the audit server is
    // registered for it alone, and fails open, so the shared server's decisions never mix in.
    // Everything below is a dry run: nothing is stored there.
    let ns = "scoped-secrets-system";
    let _registered = register_deploy_webhooks(
        "scoped-secrets-audit",
        &audit.webhook_addr.to_string(),
        serde_json::json!({"matchLabels": {"kubernetes.io/metadata.name": ns}}),
        Some("Ignore"),
    );
    let yaml = format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: audited
  namespace: {ns}
  labels: {{{label}: p-vwxyz}}
  annotations: {{{copy}: \"true\"}}
data: {{key: ZG9n}}
",
        label = keys::PROJECT_SCOPED_LABEL,
        copy = keys::COPY_ANNOTATION
    );
    // Each denial as audit lines: what is wrong, and what to do, each within 120 characters.
    let s3 = message::would_deny(&format!(
        "label {} is only allowed on secrets in a project's backing namespace, and namespace \
         \"{ns}\" is not one; create the secret in the project's backing namespace and the \
         reconciler will copy it here",
        keys::PROJECT_SCOPED_LABEL
    ));
    let s4 = message::would_deny(&format!(
        "only the scoped-secrets reconciler may set copy markers; remove annotation {} from secret \
         \"audited\" in namespace \"{ns}\"",
        keys::COPY_ANNOTATION
    ));
    assert_eq!(
        s3.last().map(String::as_str),
        Some(
            "would deny: …; create the secret in the project's backing namespace and the \
             reconciler will copy it here"
        )
    );
    let out = eventually(
        "the apiserver to call the audit server",
        Duration::from_secs(30),
        || {
            let out = kubectl_apply(&yaml, &["--dry-run=server"]);
            stderr(&out).contains("would deny: ").then_some(out)
        },
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("secret/audited created (server dry run)"),
        "{}",
        stdout(&out)
    );
    for line in s3.iter().chain(&s4) {
        assert_warned(&out, line);
    }
}
