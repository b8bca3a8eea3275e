//! N3: join and leave are announced.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use scoped_secrets::message;
use testbed::prelude::*;

#[test]
fn n3_joining_warns_which_secrets_will_be_overwritten() {
    let project = project("n3j");
    original(&project, "api");
    let ns = plain_namespace("n3j");
    generic(&ns, "api");
    let head = format!(
        "namespace \"{ns}\" joins project {}; its project-scoped secrets will overwrite 1 secret here",
        project.id()
    );
    let warning = message::warning_list(&head, &["api"]);
    assert!(warning.ends_with(": api"), "{warning}");
    let join = format!(
        "annotate namespace {ns} {}={}",
        keys::PROJECT_ID_KEY,
        project.id()
    );
    assert_warned_dry_then_real(&join, &warning);
}

#[test]
fn n3_leaving_warns_how_many_copies_will_be_removed() {
    let (project, ns) = a_copy_of_db("n3l");
    let out = kubectl(&[
        "annotate",
        "namespace",
        &ns,
        &format!("{}-", keys::PROJECT_ID_KEY),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let head = format!(
        "namespace \"{ns}\" leaves project {}; 1 copy of its project-scoped secrets will be removed",
        project.id()
    );
    assert_warned(&out, &message::warning_list(&head, &["db"]));
    // M1: the label follows the annotation out.
    let labels = ok(kubectl(&[
        "get",
        "namespace",
        &ns,
        "-o",
        "jsonpath={.metadata.labels}",
    ]));
    assert!(!labels.contains(keys::PROJECT_ID_KEY), "{labels}");
}
