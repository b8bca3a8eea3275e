//! What a Project's `CopiesInPlace` condition says: whether every copy of its originals is in place
//! in the cluster that serves it, and if not, why (the cluster is down since when, its credentials
//! are refused, copies are still to be written, or conflicts hold them off). Pure.

use super::placement::ClusterState;
use crate::plan::Progress;

/// Where a project is served, and what is known there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served<'a> {
    /// In the management cluster (its cluster is that one, or not registered).
    Here {
        cluster: &'a str,
        progress: Progress,
    },
    /// In its own registered cluster; `None` until that cluster's worker has reported on it.
    Downstream {
        cluster: &'a str,
        state: &'a ClusterState,
        progress: Option<Progress>,
    },
}

/// The condition: status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub in_place: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    fn not_in_place(reason: &'static str, message: String) -> Self {
        Self {
            in_place: false,
            reason,
            message,
        }
    }
}

pub fn condition(served: Served<'_>) -> Condition {
    let (cluster, progress) = match served {
        Served::Here { cluster, progress } => (cluster, Some(progress)),
        Served::Downstream {
            cluster,
            state,
            progress,
        } => {
            if let Some(down) = &state.down {
                return Condition::not_in_place(
                    down.reason,
                    format!(
                        "cluster {cluster} cannot be served since {}: {}; its copies are left as they were",
                        down.since, down.message
                    ),
                );
            }
            (cluster, progress)
        }
    };
    match progress {
        None => Condition::not_in_place(
            "ClusterNotListed",
            format!("cluster {cluster} is being listed"),
        ),
        Some(p) if p.conflicts > 0 => Condition::not_in_place(
            "CopyConflicts",
            format!(
                "{} in cluster {cluster}: a secret there holds the name and is not a copy (the Events on the originals name them)",
                crate::message::count(p.conflicts, "conflict", "conflicts")
            ),
        ),
        Some(p) if p.pending > 0 => Condition::not_in_place(
            "CopiesPending",
            format!(
                "{} still to be written in cluster {cluster}",
                crate::message::count(p.pending, "copy", "copies")
            ),
        ),
        Some(_) => Condition {
            in_place: true,
            reason: "CopiesInPlace",
            message: format!("every copy is in place in cluster {cluster}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clusters::placement::Down;

    #[test]
    fn the_condition_names_the_cluster_and_why() {
        let done = Progress::default();
        let here = condition(Served::Here {
            cluster: "local",
            progress: done,
        });
        assert!(here.in_place);
        assert_eq!(here.message, "every copy is in place in cluster local");
        let pending = condition(Served::Here {
            cluster: "local",
            progress: Progress {
                pending: 3,
                conflicts: 0,
            },
        });
        assert_eq!(
            (pending.in_place, pending.reason, pending.message.as_str()),
            (
                false,
                "CopiesPending",
                "3 copies still to be written in cluster local"
            )
        );
        let down = ClusterState {
            down: Some(Down {
                reason: "ClusterUnreachable",
                message: "https://10.0.0.1 cannot be reached: no answer within 10s".to_owned(),
                since: "2026-11-29T16:00:00Z".to_owned(),
            }),
            ..ClusterState::default()
        };
        let unreachable = condition(Served::Downstream {
            cluster: "c-abc123",
            state: &down,
            progress: Some(done),
        });
        assert_eq!(unreachable.reason, "ClusterUnreachable");
        assert!(
            unreachable
                .message
                .starts_with("cluster c-abc123 cannot be served since 2026-11-29T16:00:00Z"),
            "{}",
            unreachable.message
        );
        let conflicts = condition(Served::Downstream {
            cluster: "c-abc123",
            state: &ClusterState::default(),
            progress: Some(Progress {
                pending: 1,
                conflicts: 2,
            }),
        });
        assert_eq!(conflicts.reason, "CopyConflicts");
        assert!(
            conflicts
                .message
                .starts_with("2 conflicts in cluster c-abc123")
        );
        let listing = condition(Served::Downstream {
            cluster: "c-abc123",
            state: &ClusterState::default(),
            progress: None,
        });
        assert_eq!(listing.reason, "ClusterNotListed");
    }
}
