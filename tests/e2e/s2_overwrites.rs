//! S2: overwrite warning.
//!
//! End to end through the real apiserver and `kubectl`; the shared helpers are in `common.rs`.

use crate::common::*;
use scoped_secrets::message;
use testbed::prelude::*;

#[test]
fn s2_an_original_that_will_overwrite_a_plain_secret_warns_naming_the_namespace() {
    let project = project("s2");
    let ns = namespace_in(&project, "s2");
    generic(&ns, "api");
    let head = format!(
        "project-scoped secret \"{}\" will overwrite the secret of that name in 1 namespace",
        origin(&project, "api")
    );
    let warning = message::warning_list(&head, &[ns.as_str()]);
    assert!(warning.ends_with(&format!(": {ns}")), "{warning}");
    let yaml = original_yaml(&project, "api", "");
    let dry = kubectl_apply(&yaml, &["--dry-run=server"]);
    assert_warned(&dry, &warning);
    let out = kubectl_apply(&yaml, &[]);
    assert_warned(&out, &warning);
    assert!(
        stdout(&out).contains("secret/api created"),
        "{}",
        stdout(&out)
    );
}
