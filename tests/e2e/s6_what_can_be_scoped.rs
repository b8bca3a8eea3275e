//! S6: what can be project-scoped.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use testbed::prelude::*;

#[test]
fn s6_a_service_account_token_original_is_denied() {
    let project = project("s6t");
    let yaml = secret_yaml(
        &project.backing,
        "token",
        &scoped_label(&project.name),
        "  annotations: {kubernetes.io/service-account.name: default}
type: kubernetes.io/service-account-token
",
    );
    let err = fails(kubectl_apply(&yaml, &[]));
    assert_denied(
        &err,
        GUARD,
        &format!(
            "secret \"token\" in namespace \"{}\" is of type kubernetes.io/service-account-token, \
             which cannot be project-scoped; remove label {}",
            project.backing,
            keys::PROJECT_SCOPED_LABEL
        ),
    );
}

/// What the ignore list's own parser says of `pattern`.
fn parse_error(pattern: &str) -> String {
    scoped_secrets::plan::IgnoreList::parse(pattern)
        .expect_err("an invalid pattern")
        .to_string()
}

/// The guard denied an ignore annotation, quoting the parser's error.
#[track_caller]
fn assert_denied_for_the_pattern(err: &str, parse_error: &str) {
    let message = format!(
        "annotation {}: {parse_error}",
        keys::IGNORE_NAMESPACES_ANNOTATION
    );
    assert_denied(err, GUARD, &message);
}

#[test]
fn s6_an_invalid_ignore_pattern_is_denied_with_the_parse_error() {
    let project = project("s6i");
    let pattern = "team-(a";
    let parse_error = parse_error(pattern);
    assert!(parse_error.contains("team-(a"), "{parse_error}");
    let yaml = original_yaml(
        &project,
        "ignoring",
        &format!(
            "  annotations: {{{}: \"{pattern}\"}}\n",
            keys::IGNORE_NAMESPACES_ANNOTATION
        ),
    );
    let err = fails(kubectl_apply(&yaml, &[]));
    assert_denied_for_the_pattern(&err, &parse_error);
}

#[test]
fn s6_an_invalid_ignore_pattern_added_to_an_existing_original_is_denied() {
    let project = project("s6u");
    original(&project, "cfg");
    let pattern = "[unclosed";
    let parse_error = parse_error(pattern);
    let err = fails(kubectl_line(&format!(
        "annotate secret cfg -n {} {}={pattern}",
        project.backing,
        keys::IGNORE_NAMESPACES_ANNOTATION
    )));
    assert_denied_for_the_pattern(&err, &parse_error);
}
