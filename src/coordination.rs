//! Rules shared by every `coordination.k8s.io/v1` Lease the product holds: the reconciler's leader
//! election (`reconciler::lease`) and the per-cluster ownership (`clusters::ownership`).
//!
//! Who may write a Lease is decided from its holder; whether another holder's claim has lapsed is
//! judged by our own clock, never by the times written in it (client-go's rule: no trust in other
//! clocks). Writes carry the Lease's resourceVersion, so of two replicas deciding alike only one wins.

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::jiff::Timestamp;
use std::time::{Duration, Instant};

/// What to do with a Lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It is ours: renew it.
    Renew,
    /// Free or expired: take it.
    TakeOver,
    /// Someone else holds it: wait.
    Follow,
}

/// Decides from the Lease's holder and whether its record has gone stale.
pub fn step(spec: &LeaseSpec, identity: &str, expired: bool) -> Step {
    match holder(spec) {
        Some(holder) if holder == identity => Step::Renew,
        None => Step::TakeOver,
        Some(_) if expired => Step::TakeOver,
        Some(_) => Step::Follow,
    }
}

/// The Lease's holder; an empty one (as client-go leaves on release) is none.
pub fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// Judges another holder's Lease expired by our own clock: once its record (holder, renew time,
/// transitions) has stood still for the lease duration since we first saw it so.
#[derive(Default, Debug)]
pub struct ExpiryClock {
    seen: Option<Seen>,
}

#[derive(Debug)]
struct Seen {
    record: Record,
    since: Instant,
    duration: Duration,
}

#[derive(PartialEq, Debug)]
struct Record {
    holder: Option<String>,
    renewed: Option<Timestamp>,
    transitions: Option<i32>,
}

impl ExpiryClock {
    /// Notes the record as it stands at `now` (the count restarts when it changed) and says whether
    /// it has expired.
    pub fn expired(&mut self, spec: &LeaseSpec, default_duration: Duration, now: Instant) -> bool {
        self.observe(spec, default_duration, now);
        self.expired_at(now)
    }

    /// Notes the record as it stands at `now`: the count restarts when it changed.
    pub fn observe(&mut self, spec: &LeaseSpec, default_duration: Duration, now: Instant) {
        let record = Record {
            holder: spec.holder_identity.clone(),
            renewed: spec.renew_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions,
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(default_duration, Duration::from_secs);
        match &mut self.seen {
            Some(seen) if seen.record == record => seen.duration = duration,
            _ => {
                self.seen = Some(Seen {
                    record,
                    since: now,
                    duration,
                });
            }
        }
    }

    /// Whether the record last observed has stood still for its duration at `now`.
    pub fn expired_at(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| now >= deadline)
    }

    /// When the record last observed expires unless it changes; `None` before any observation.
    pub fn deadline(&self) -> Option<Instant> {
        self.seen.as_ref().map(|seen| seen.since + seen.duration)
    }
}

/// A duration as a Lease's whole seconds.
pub fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn held_by(holder: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn step_table() {
        let cases = [
            (held_by(Some("me")), false, Step::Renew),
            (held_by(Some("me")), true, Step::Renew),
            (held_by(None), false, Step::TakeOver),
            (held_by(Some("")), false, Step::TakeOver),
            (held_by(Some("other")), false, Step::Follow),
            (held_by(Some("other")), true, Step::TakeOver),
        ];
        for (spec, expired, expected) in cases {
            assert_eq!(
                step(&spec, "me", expired),
                expected,
                "{spec:?} expired={expired}"
            );
        }
    }

    #[test]
    fn another_holder_expires_only_after_its_record_stands_still_for_the_duration() {
        let mut clock = ExpiryClock::default();
        let mut spec = held_by(Some("other"));
        spec.lease_duration_seconds = Some(15);
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(clock.deadline(), None);
        assert!(
            !clock.expired(&spec, Duration::from_secs(99), at(0)),
            "first sight"
        );
        assert_eq!(clock.deadline(), Some(at(15)));
        assert!(!clock.expired(&spec, Duration::from_secs(99), at(14)));
        // A renewal restarts the count, whatever the renewer's clock says.
        spec.renew_time = Some(MicroTime(Timestamp::UNIX_EPOCH));
        assert!(!clock.expired(&spec, Duration::from_secs(99), at(14)));
        assert!(!clock.expired(&spec, Duration::from_secs(99), at(28)));
        assert!(clock.expired(&spec, Duration::from_secs(99), at(29)));
        assert!(clock.expired_at(at(29)) && !clock.expired_at(at(28)));
    }
}
