//! The Lease writes of ownership: take, renew, release. Every write carries the resourceVersion of
//! the Lease it was decided from, so a Lease that changed meanwhile is never overwritten blindly.

use crate::coordination::{holder, seconds};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use std::collections::BTreeMap;
use std::time::Duration;

/// Label on every ownership Lease, so `kubectl get leases -l scoped-secrets.io/lease` lists them:
/// `replica` for a replica's own, `cluster` for a cluster's.
pub const LEASE_KIND_LABEL: &str = "scoped-secrets.io/lease";
/// Label on a cluster's Lease: the cluster id.
pub const LEASE_CLUSTER_LABEL: &str = "scoped-secrets.io/lease-cluster";

/// Who writes and how long a claim lasts.
pub struct Writer<'a> {
    pub api: &'a Api<Lease>,
    pub identity: &'a str,
    pub duration: Duration,
}

/// A Lease to create: its name and labels.
pub struct NewLease {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Writer<'_> {
    /// Takes a Lease that is absent (`base` none: created) or free or expired (`base`: replaced with
    /// its resourceVersion). `Ok(None)` when someone else changed or created it first.
    pub async fn take(
        &self,
        new: NewLease,
        base: Option<Lease>,
    ) -> Result<Option<Lease>, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = base else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(new.name),
                    labels: Some(new.labels),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(Some(now.clone()), now, 0)),
            };
            return lost_on_conflict(self.api.create(&PostParams::default(), &lease).await);
        };
        let previous = lease.spec.take().unwrap_or_default();
        let transitions = previous.lease_transitions.unwrap_or(0).saturating_add(1);
        lease.labels_mut().extend(new.labels);
        lease.spec = Some(self.spec(Some(now.clone()), now, transitions));
        lost_on_conflict(
            self.api
                .replace(&lease.name_any(), &PostParams::default(), &lease)
                .await,
        )
    }

    /// Renews a Lease we hold. `Ok(None)`: it is no longer ours.
    pub async fn renew(&self, base: Lease) -> Result<Option<Lease>, kube::Error> {
        self.update_ours(base, |spec, writer| {
            let now = MicroTime(Timestamp::now());
            let acquired = spec.acquire_time.clone().or_else(|| Some(now.clone()));
            let transitions = spec.lease_transitions.unwrap_or(0);
            *spec = writer.spec(acquired, now, transitions);
        })
        .await
    }

    /// Clears the holder of a Lease we hold, so the next holder need not wait for it to expire.
    /// `Ok(None)`: it was not ours (any more), so nothing was released.
    pub async fn release(&self, base: Lease) -> Result<Option<Lease>, kube::Error> {
        self.update_ours(base, |spec, _| {
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
        })
        .await
    }

    /// Deletes a Lease if it is still at `resource_version`; one that changed or is gone is left.
    pub async fn delete(&self, name: &str, resource_version: String) -> Result<(), kube::Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(resource_version),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Writes `change` onto `base`; when the Lease changed meanwhile (409), re-reads it and writes
    /// once more only if it still names us. `Ok(None)` when it is gone or someone else's.
    async fn update_ours(
        &self,
        base: Lease,
        change: impl Fn(&mut LeaseSpec, &Self),
    ) -> Result<Option<Lease>, kube::Error> {
        let name = base.name_any();
        let changed = |mut lease: Lease| {
            change(lease.spec.get_or_insert_default(), self);
            lease
        };
        match self
            .api
            .replace(&name, &PostParams::default(), &changed(base))
            .await
        {
            Ok(lease) => return Ok(Some(lease)),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error),
        }
        let Some(fresh) = self.api.get_opt(&name).await? else {
            return Ok(None);
        };
        if fresh.spec.as_ref().and_then(holder) != Some(self.identity) {
            return Ok(None);
        }
        lost_on_conflict(
            self.api
                .replace(&name, &PostParams::default(), &changed(fresh))
                .await,
        )
    }

    fn spec(&self, acquired: Option<MicroTime>, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.to_owned()),
            acquire_time: acquired,
            renew_time: Some(renewed),
            lease_duration_seconds: Some(seconds(self.duration)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

/// A write that lost a race (409: changed or created meanwhile; 404: deleted meanwhile) is no error:
/// the Lease is simply not ours.
fn lost_on_conflict(result: Result<Lease, kube::Error>) -> Result<Option<Lease>, kube::Error> {
    match result {
        Ok(lease) => Ok(Some(lease)),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(None),
        Err(error) => Err(error),
    }
}
