//! The test bed's downstream cluster (`testbed::downstream`) against the product: a control plane of
//! its own with `deploy/downstream-access`, registered in this binary's management cluster with a
//! bound token of the copier. The registration connects, and the copier's least-privilege rights
//! are enough for the worker's writes there; revoking the copier's ServiceAccount is
//! seen as refused credentials (metric and Event); restoring it reconnects, without a restart.

use crate::clusters::{connected, event_saying};
use scoped_secrets::keys;
use scoped_secrets::policy::OverwritePolicy;
use std::path::Path;
use std::time::Duration;
use testbed::downstream::Downstream;
use testbed::harness::*;
use testbed::prelude::*;

/// The probe runs every 30 s while a cluster answers: a revocation is seen within that, plus a
/// request, on a loaded machine.
const PROBE_WAIT: Duration = Duration::from_secs(75);

#[test]
fn a_downstream_cluster_connects_is_refused_once_revoked_and_reconnects_once_restored() {
    let _serial = serial();
    let running = start(OverwritePolicy::Warn);
    let dir = Path::new(REPO).join(format!("target/downstream/{}", std::process::id()));
    let downstream = Downstream::start("c-support", dir.join("c-support")).expect("c-support");
    let registration = downstream.registration_name();

    downstream.register(&env().kubeconfig).expect("registered");
    eventually("c-support connected", WAIT, || {
        (connected(&running, "c-support") == Some(1.0)).then_some(())
    });
    let server = format!("https://{}", downstream.control_plane.server);
    event_saying(&registration, "ClusterConnected", &server);

    // deploy/downstream-access's rights are all the worker needs there: a copy created, the
    // projectId label repaired (a namespace patch), the copy replaced and deleted, and no write
    // failed.
    let project = project_in("c-support", &unique("p-sup"));
    let member = unique("sup-team");
    ok(kubectl_stdin(
        downstream.kubeconfig(),
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {member}\n  annotations: {{{}: \"{}\"}}\n",
            keys::PROJECT_ID_KEY,
            project.id()
        ),
    ));
    apply_original(&project, "db", "k: dg==", "");
    let copy_holding = |value: &str| {
        eventually(
            &format!("the copy holding {value} in c-support"),
            WAIT,
            || {
                downstream.secret(&member, "db").filter(|s| {
                    is_copy_of(s, &project.backing, "db") && s["data"]["k"].as_str() == Some(value)
                })
            },
        )
    };
    copy_holding("dg==");
    eventually("the projectId label repaired in c-support", WAIT, || {
        let label = ok(kubectl_with(
            downstream.kubeconfig(),
            &[
                "get",
                "namespace",
                &member,
                "-o",
                &format!(
                    "jsonpath={{.metadata.labels.{}}}",
                    keys::PROJECT_ID_KEY.replace('.', "\\.")
                ),
            ],
        ));
        (label == project.name).then_some(())
    });
    apply_original(&project, "db", "k: ZG9n", "");
    copy_holding("ZG9n");
    ok(kubectl(&["delete", "secret", "db", "-n", &project.backing]));
    eventually("the copy removed from c-support", WAIT, || {
        downstream.secret(&member, "db").is_none().then_some(())
    });
    let failed = running
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix("scoped_secrets_cluster_errors_total{cluster=\"c-support\"} "))
        .map(str::to_owned);
    assert!(
        failed.as_deref().is_none_or(|n| n == "0"),
        "writes in c-support failed: {failed:?}"
    );

    downstream.revoke().expect("revoked");
    eventually("c-support refused", PROBE_WAIT, || {
        (connected(&running, "c-support") == Some(0.0)).then_some(())
    });
    event_saying(&registration, "ClusterCredentialsRefused", "401");

    downstream.restore().expect("restored");
    eventually("c-support connected again", WAIT, || {
        (connected(&running, "c-support") == Some(1.0)).then_some(())
    });

    ok(kubectl(&[
        "delete",
        "secret",
        &registration,
        "-n",
        LEASE_NAMESPACE,
    ]));
    eventually("c-support forgotten", WAIT, || {
        connected(&running, "c-support").is_none().then_some(())
    });
}
