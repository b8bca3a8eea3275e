//! S7: consequences are announced.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use scoped_secrets::message;
use testbed::prelude::*;

/// The warning that `copies` ("1 copy", "2 copies") of the project's original `name` will be
/// removed from `namespaces`.
fn removal_warning(project: &TestProject, name: &str, copies: &str, namespaces: &[&str]) -> String {
    let head = format!(
        "{copies} of project-scoped secret \"{}\" will be removed from",
        origin(project, name)
    );
    message::warning_list(&head, namespaces)
}

#[test]
fn s7_deleting_an_original_warns_how_many_copies_will_be_removed() {
    let (project, [a, b]) = copies_of("s7", "db", ["s7a", "s7b"]);
    let mut namespaces = [a.as_str(), b.as_str()];
    namespaces.sort();
    let warning = removal_warning(&project, "db", "2 copies", &namespaces);
    assert!(warning.ends_with(&format!(": {}, {}", namespaces[0], namespaces[1])));
    let delete = format!("delete secret db -n {}", project.backing);
    assert_warned_dry_then_real(&delete, &warning);
}

#[test]
fn s7_removing_the_label_of_an_original_warns_too() {
    let (project, [ns]) = copies_of("s7l", "cfg", ["s7l"]);
    let out = kubectl_line(&format!(
        "label secret cfg -n {} {}-",
        project.backing,
        keys::PROJECT_SCOPED_LABEL
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_warned(&out, &removal_warning(&project, "cfg", "1 copy", &[&ns]));
}

#[test]
fn s7_narrowing_the_ignore_list_warns_how_many_copies_will_be_removed() {
    let (project, [_kept, ignored]) = copies_of("s7i", "db", ["s7i-kept", "s7i-gone"]);
    let pattern = ignored.clone();
    let out = kubectl_line(&format!(
        "annotate secret db -n {} {}={pattern}",
        project.backing,
        keys::IGNORE_NAMESPACES_ANNOTATION
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_warned(
        &out,
        &removal_warning(&project, "db", "1 copy", &[&ignored]),
    );
}
