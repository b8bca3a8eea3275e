//! S7: consequences are announced.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::keys;
use scoped_secrets::message;
use testbed::prelude::*;

#[test]
fn s7_deleting_an_original_warns_how_many_copies_will_be_removed() {
    let project = project("s7");
    let a = namespace_in(&project, "s7a");
    let b = namespace_in(&project, "s7b");
    original(&project, "db");
    copy_as_reconciler(&project, &a, "db");
    copy_as_reconciler(&project, &b, "db");
    let mut namespaces = [a.as_str(), b.as_str()];
    namespaces.sort();
    let head = format!(
        "2 copies of project-scoped secret \"{}\" will be removed from",
        origin(&project, "db")
    );
    let warning = message::warning_list(&head, &namespaces);
    assert!(warning.ends_with(&format!(": {}, {}", namespaces[0], namespaces[1])));
    let delete = |extra: &[&str]| {
        let mut args = vec!["delete", "secret", "db", "-n", &project.backing];
        args.extend_from_slice(extra);
        kubectl(&args)
    };
    let dry = delete(&["--dry-run=server"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_warned(&dry, &warning);
    let out = delete(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_warned(&out, &warning);
}

#[test]
fn s7_removing_the_label_of_an_original_warns_too() {
    let project = project("s7l");
    let ns = namespace_in(&project, "s7l");
    original(&project, "cfg");
    copy_as_reconciler(&project, &ns, "cfg");
    let out = kubectl(&[
        "label",
        "secret",
        "cfg",
        "-n",
        &project.backing,
        &format!("{}-", keys::PROJECT_SCOPED_LABEL),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let head = format!(
        "1 copy of project-scoped secret \"{}\" will be removed from",
        origin(&project, "cfg")
    );
    assert_warned(&out, &message::warning_list(&head, &[ns.as_str()]));
}

#[test]
fn s7_narrowing_the_ignore_list_warns_how_many_copies_will_be_removed() {
    let project = project("s7i");
    let kept = namespace_in(&project, "s7i-kept");
    let ignored = namespace_in(&project, "s7i-gone");
    original(&project, "db");
    copy_as_reconciler(&project, &kept, "db");
    copy_as_reconciler(&project, &ignored, "db");
    let pattern = ignored.clone();
    let out = kubectl(&[
        "annotate",
        "secret",
        "db",
        "-n",
        &project.backing,
        &format!("{}={pattern}", keys::IGNORE_NAMESPACES_ANNOTATION),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let head = format!(
        "1 copy of project-scoped secret \"{}\" will be removed from",
        origin(&project, "db")
    );
    assert_warned(&out, &message::warning_list(&head, &[ignored.as_str()]));
}
