//! The test bed's downstream cluster (`testbed::downstream`) against the product: a control plane of
//! its own with `deploy/downstream-access`, registered in this binary's management cluster with a
//! bound token of the copier. The registration connects; revoking the copier's ServiceAccount is
//! seen as refused credentials (metric and Event); restoring it reconnects, without a restart.

use crate::clusters::{connected, event_saying};
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
