//! `plan` with downstream clusters registered: one group per cluster, the management cluster
//! first, each planned as the reconciler plans it ([`plan::downstream_actions`],
//! [`plan::served_elsewhere`], [`plan::management_actions`]). A cluster that cannot be read is a
//! group that says why and holds no plan, never an empty one.

use super::{Row, counts, render_text as render_actions};
use crate::plan::{self, Action, Settings};
use crate::plan_downstream::{Downstream, Unreadable};
use crate::world::World;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One cluster's part of the plan.
#[derive(Debug)]
pub struct ClusterGroup {
    pub cluster: String,
    /// The management cluster (`--local-cluster-id`), where the originals and Projects are.
    pub management: bool,
    /// The registration Secret, for a downstream cluster.
    pub registration: Option<String>,
    pub server: Option<String>,
    pub actions: Result<Vec<Action>, Unreadable>,
}

/// The management cluster's group, then one per registration (sorted by cluster id).
pub fn plan_clusters(
    management: &World,
    downstream: Vec<Downstream>,
    settings: &Settings,
    manage_backing_namespaces: bool,
    local_cluster_id: &str,
) -> Vec<ClusterGroup> {
    // Each readable cluster's composed world and its plan, as its worker makes them.
    let planned: Vec<(ClusterGroup, Result<World, Unreadable>)> = downstream
        .into_iter()
        .map(|cluster| {
            let composed = cluster
                .world
                .map(|own| World::for_cluster(management, &own, &cluster.cluster));
            let actions = composed
                .as_ref()
                .map(|world| plan::downstream_actions(world, settings))
                .map_err(Clone::clone);
            let group = ClusterGroup {
                cluster: cluster.cluster,
                management: false,
                registration: Some(cluster.registration),
                server: cluster.server,
                actions,
            };
            (group, composed)
        })
        .collect();
    let served = plan::served_elsewhere(
        planned
            .iter()
            .filter_map(|(group, world)| Some((world.as_ref().ok()?, group.actions.as_ref().ok()?)))
            .map(|(world, actions)| (world, actions.as_slice())),
    );
    let mut groups = vec![ClusterGroup {
        cluster: local_cluster_id.to_owned(),
        management: true,
        registration: None,
        server: None,
        actions: Ok(plan::management_actions(
            management,
            served,
            settings,
            manage_backing_namespaces,
        )),
    }];
    groups.extend(planned.into_iter().map(|(group, _)| group));
    groups
}

/// `Cluster <id> (<where>):` and the cluster's plan indented under it; an unreadable cluster says
/// why instead; a last line counts the clusters that could not be read.
pub fn render_text(groups: &[ClusterGroup]) -> String {
    let mut out = String::new();
    for group in groups {
        let _ = write!(out, "Cluster {} ({})", group.cluster, whereabouts(group));
        match &group.actions {
            Ok(actions) => {
                out.push_str(":\n");
                for line in render_actions(actions).lines() {
                    if line.is_empty() {
                        out.push('\n');
                    } else {
                        let _ = writeln!(out, "  {line}");
                    }
                }
            }
            Err(why) => {
                let _ = writeln!(out, ": CANNOT BE READ, nothing is planned for it:\n  {why}");
            }
        }
        out.push('\n');
    }
    let unreadable = groups.iter().filter(|g| g.actions.is_err()).count();
    if unreadable > 0 {
        let _ = writeln!(
            out,
            "{unreadable} of {} clusters cannot be read: what they need is unknown, not nothing.",
            groups.len()
        );
    }
    out
}

fn whereabouts(group: &ClusterGroup) -> String {
    if group.management {
        return "the management cluster".to_owned();
    }
    let registration = group.registration.as_deref().unwrap_or_default();
    match &group.server {
        Some(server) => format!("{server}, registration {registration}"),
        None => format!("registration {registration}"),
    }
}

#[derive(Serialize)]
struct JsonCluster<'a> {
    cluster: &'a str,
    management: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<&'a str>,
    readable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actions: Option<Vec<Row>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<BTreeMap<&'static str, usize>>,
}

#[derive(Serialize)]
struct JsonGrouped<'a> {
    clusters: Vec<JsonCluster<'a>>,
    unreadable: usize,
}

/// `{"clusters": [{"cluster", "management", "readable", "actions", "summary", ...}], "unreadable": n}`:
/// an unreadable cluster has `"readable": false` and a `reason`, and no `actions` or `summary`.
pub fn render_json(groups: &[ClusterGroup]) -> Result<String> {
    let report = JsonGrouped {
        clusters: groups
            .iter()
            .map(|group| JsonCluster {
                cluster: &group.cluster,
                management: group.management,
                registration: group.registration.as_deref(),
                server: group.server.as_deref(),
                readable: group.actions.is_ok(),
                reason: group.actions.as_ref().err().map(ToString::to_string),
                actions: group
                    .actions
                    .as_ref()
                    .ok()
                    .map(|actions| actions.iter().map(Row::of).collect()),
                summary: group.actions.as_ref().ok().map(|actions| counts(actions)),
            })
            .collect(),
        unreadable: groups.iter().filter(|g| g.actions.is_err()).count(),
    };
    let mut text = serde_json::to_string_pretty(&report).context("encoding the plan as JSON")?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{PROJECT_SCOPED_CLUSTER_LABEL, PROJECT_SCOPED_LABEL};
    use crate::world::fixtures::*;

    /// Project `c-one:p` with original `db`; cluster c-one has namespace `team-a` in it, c-two
    /// could not be read.
    fn groups() -> Vec<ClusterGroup> {
        let mut management = World::default();
        let p = project(&mut management, "c-one", "p", "c-one-p");
        let labels = [
            (PROJECT_SCOPED_LABEL, "p"),
            (PROJECT_SCOPED_CLUSTER_LABEL, "c-one"),
        ];
        add_secret(&mut management, secret("c-one-p", "db", &labels, &[]));
        let mut own = World::default();
        namespace_in(&mut own, "team-a", &p);
        let downstream = vec![
            Downstream {
                cluster: "c-one".into(),
                registration: "reg-one".into(),
                server: Some("https://10.0.0.1:6443".into()),
                world: Ok(own),
            },
            Downstream {
                cluster: "c-two".into(),
                registration: "reg-two".into(),
                server: Some("https://10.0.0.2:6443".into()),
                world: Err(Unreadable::Unreachable("no answer within 10s".into())),
            },
        ];
        plan_clusters(&management, downstream, &Settings::default(), true, "local")
    }

    #[test]
    fn each_cluster_is_a_group_and_an_unreadable_one_holds_no_plan() {
        let expected = "\
Cluster local (the management cluster):
  No changes: every copy is in place.

Cluster c-one (https://10.0.0.1:6443, registration reg-one):
  Copies to create (1):
    team-a/db (from c-one-p/db)

  Plan: 1 to create, 0 to overwrite, 0 to update, 0 to recreate, 0 to delete, 0 conflicts, 0 repairs.

Cluster c-two (https://10.0.0.2:6443, registration reg-two): CANNOT BE READ, nothing is planned for it:
  unreachable: no answer within 10s

1 of 3 clusters cannot be read: what they need is unknown, not nothing.
";
        assert_eq!(render_text(&groups()), expected);
    }

    #[test]
    fn json_groups_alike_and_gives_an_unreadable_cluster_no_actions() {
        let text = render_json(&groups()).expect("JSON");
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let clusters = value["clusters"].as_array().expect("clusters");
        assert_eq!(clusters.len(), 3);
        assert_eq!(clusters[0]["management"], true);
        assert_eq!(clusters[1]["actions"][0]["namespace"], "team-a");
        assert_eq!(clusters[1]["summary"]["create"], 1);
        assert_eq!(clusters[2]["readable"], false);
        assert_eq!(clusters[2]["reason"], "unreachable: no answer within 10s");
        assert!(clusters[2].get("actions").is_none() && clusters[2].get("summary").is_none());
        assert_eq!(value["unreadable"], 1);
    }
}
