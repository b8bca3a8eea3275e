//! `scoped-secrets plan`: what the reconciler would write, for the cluster as it is or with a
//! manifest applied, as text for a person or as JSON. Names only, never secret data.

use crate::plan::Settings;
use crate::plan::{self, Action, ActionKind};
use crate::plan_downstream::{ClusterOptions, load_downstream};
use crate::plan_load::{load_world, overlay_manifest};
use crate::world::World;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

mod grouped;

/// What `plan` printed, and whether every cluster it should cover was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOutput {
    pub text: String,
    /// Registered clusters whose plan is unknown (they could not be read, or their registration is
    /// not used): `plan` then exits with [`UNREADABLE_EXIT_CODE`].
    pub unreadable: usize,
}

/// `plan`'s exit status when a registered cluster could not be read (1 is an error, 2 a usage error).
pub const UNREADABLE_EXIT_CODE: u8 = 3;

/// Loads the world (from the cluster when a client is given, else empty), lays the manifest over it,
/// and renders the plan. `manage_backing_namespaces` as `serve`'s: backing-namespace actions are
/// planned, and a recorded backing namespace counts only while marked.
/// With downstream clusters registered in the management cluster, each is read and planned as the
/// reconciler plans it, and the report is grouped by cluster.
pub async fn plan_command(
    client: Option<kube::Client>,
    manifest: Option<&Path>,
    json: bool,
    manage_backing_namespaces: bool,
    settings: &Settings,
    clusters: &ClusterOptions,
) -> Result<PlanOutput> {
    let (mut world, downstream) = match client {
        Some(client) => (
            load_world(client.clone(), manage_backing_namespaces).await?,
            load_downstream(&client, clusters).await?,
        ),
        None => (World::for_backing(manage_backing_namespaces), Vec::new()),
    };
    if let Some(path) = manifest {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        overlay_manifest(&mut world, &text).with_context(|| format!("in {}", path.display()))?;
    }
    if downstream.is_empty() {
        let actions = plan::planned(&world, settings, manage_backing_namespaces);
        let text = if json {
            render_json(&actions)?
        } else {
            render_text(&actions)
        };
        return Ok(PlanOutput {
            text,
            unreadable: 0,
        });
    }
    let groups = grouped::plan_clusters(
        &world,
        downstream,
        settings,
        manage_backing_namespaces,
        &clusters.local_cluster_id,
    );
    let unreadable = groups.iter().filter(|g| g.actions.is_err()).count();
    let text = if json {
        grouped::render_json(&groups)?
    } else {
        grouped::render_text(&groups)
    };
    Ok(PlanOutput { text, unreadable })
}

/// One action as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub action: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Row {
    pub fn of(action: &Action) -> Self {
        Self {
            action: action.kind().as_str(),
            namespace: action.namespace().to_owned(),
            name: action.name().to_owned(),
            origin: action.origin().map(str::to_owned),
            detail: detail(action),
        }
    }
}

fn detail(action: &Action) -> Option<String> {
    match action {
        Action::Overwrite { .. } => Some("an existing secret that is not a copy".to_owned()),
        Action::Recreate { .. } => {
            Some("type or immutability changed: delete, then create".to_owned())
        }
        Action::Conflict { reason, .. } => Some(reason.to_string()),
        Action::SetBackingNamespace {
            project,
            backing_namespace,
            refusal: Some(refusal),
            ..
        } => Some(refusal.message(project, backing_namespace)),
        Action::SetBackingNamespace {
            backing_namespace,
            create_namespace,
            ..
        } => Some(if *create_namespace {
            format!("set status.backingNamespace to {backing_namespace} and create that namespace")
        } else {
            format!("set status.backingNamespace to {backing_namespace}")
        }),
        Action::FixNamespaceLabel { label, .. } => Some(match label {
            Some(value) => format!("set label {}={value}", crate::keys::PROJECT_ID_KEY),
            None => format!("remove label {}", crate::keys::PROJECT_ID_KEY),
        }),
        Action::AddClusterLabel { cluster, .. } => Some(format!(
            "add label {}={cluster}",
            crate::keys::PROJECT_SCOPED_CLUSTER_LABEL
        )),
        Action::Create { .. } | Action::Update { .. } | Action::Delete { .. } => None,
    }
}

/// The sections of the text report, in order.
const SECTIONS: [(ActionKind, &str); 9] = [
    (ActionKind::Create, "Copies to create"),
    (ActionKind::Update, "Copies to update"),
    (ActionKind::Recreate, "Copies to recreate"),
    (ActionKind::Overwrite, "Secrets to overwrite with a copy"),
    (ActionKind::Delete, "Copies to delete"),
    (ActionKind::Conflict, "Conflicts (not written)"),
    (
        ActionKind::SetBackingNamespace,
        "Projects to give a backing namespace",
    ),
    (ActionKind::FixNamespaceLabel, "Namespace labels to repair"),
    (
        ActionKind::AddClusterLabel,
        "Originals to label with their cluster",
    ),
];

/// Grouped by kind, one line per action, and a summary line.
pub fn render_text(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "No changes: every copy is in place.\n".to_owned();
    }
    let mut out = String::new();
    for (kind, title) in SECTIONS {
        let rows: Vec<Row> = actions
            .iter()
            .filter(|a| a.kind() == kind)
            .map(Row::of)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title} ({}):", rows.len());
        for row in rows {
            let _ = writeln!(out, "  {}", line(&row));
        }
        out.push('\n');
    }
    let _ = writeln!(out, "Plan: {}.", summary_line(actions));
    out
}

fn line(row: &Row) -> String {
    let mut text = if row.namespace.is_empty() {
        row.name.clone()
    } else {
        format!("{}/{}", row.namespace, row.name)
    };
    if let Some(origin) = &row.origin {
        let _ = write!(text, " (from {origin})");
    }
    if let Some(detail) = &row.detail {
        let _ = write!(text, ": {detail}");
    }
    text
}

fn counts(actions: &[Action]) -> BTreeMap<&'static str, usize> {
    let mut counts: BTreeMap<&'static str, usize> = [
        ActionKind::Create,
        ActionKind::Overwrite,
        ActionKind::Update,
        ActionKind::Recreate,
        ActionKind::Delete,
        ActionKind::Conflict,
    ]
    .into_iter()
    .map(|kind| (kind.as_str(), 0))
    .collect();
    for action in actions {
        *counts.entry(action.kind().as_str()).or_default() += 1;
    }
    counts
}

fn summary_line(actions: &[Action]) -> String {
    let counts = counts(actions);
    let count = |kind: ActionKind| counts.get(kind.as_str()).copied().unwrap_or(0);
    let repairs = count(ActionKind::SetBackingNamespace)
        + count(ActionKind::FixNamespaceLabel)
        + count(ActionKind::AddClusterLabel);
    format!(
        "{} to create, {} to overwrite, {} to update, {} to recreate, {} to delete, {} {}, {} {}",
        count(ActionKind::Create),
        count(ActionKind::Overwrite),
        count(ActionKind::Update),
        count(ActionKind::Recreate),
        count(ActionKind::Delete),
        count(ActionKind::Conflict),
        if count(ActionKind::Conflict) == 1 {
            "conflict"
        } else {
            "conflicts"
        },
        repairs,
        if repairs == 1 { "repair" } else { "repairs" },
    )
}

#[derive(Serialize)]
struct JsonReport {
    actions: Vec<Row>,
    summary: BTreeMap<&'static str, usize>,
}

/// `{"actions": [...], "summary": {"create": n, ...}}`, pretty-printed.
pub fn render_json(actions: &[Action]) -> Result<String> {
    let report = JsonReport {
        actions: actions.iter().map(Row::of).collect(),
        summary: counts(actions),
    };
    let mut text = serde_json::to_string_pretty(&report).context("encoding the plan as JSON")?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::plan::OverwritePolicy;

    /// Rancher's example: one original in project p-vwxyz's backing namespace, two project namespaces,
    /// one of which already holds a secret of that name.
    fn manifest() -> String {
        crate::plan_load::example_project_manifest(&["team-a", "team-b"]) + ORIGINAL_AND_EXISTING
    }

    const ORIGINAL_AND_EXISTING: &str = r#"---
apiVersion: v1
kind: Namespace
metadata: {name: local-p-vwxyz}
---
apiVersion: v1
kind: Secret
metadata:
  name: test-secret
  namespace: local-p-vwxyz
  labels:
    management.cattle.io/project-scoped-secret: p-vwxyz
    management.cattle.io/project-scoped-secret-cluster: local
data: {key: ZG9n}
---
apiVersion: v1
kind: Secret
metadata: {name: test-secret, namespace: team-b}
stringData: {mine: hunter2}
"#;

    async fn run(json: bool, policy: OverwritePolicy) -> String {
        // Rancher's example: its backing namespace carries no marks, as beside Rancher.
        plan_of(&manifest(), json, false, policy).await
    }

    async fn plan_of(
        manifest: &str,
        json: bool,
        manage_backing_namespaces: bool,
        policy: OverwritePolicy,
    ) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, manifest).expect("write manifest");
        plan_command(
            None,
            Some(&path),
            json,
            manage_backing_namespaces,
            &Settings::with_policy(policy),
            &ClusterOptions::default(),
        )
        .await
        .expect("plan")
        .text
    }

    /// As `serve` by default reads them: a recorded backing namespace counts only while it carries
    /// the marks naming its Project, so an unmarked one copies nothing (the reconciler would
    /// refuse it, BackingNamespaceTaken) and a marked one copies as beside Rancher.
    #[tokio::test]
    async fn managed_backing_namespaces_count_only_while_marked() {
        let unmarked = plan_of(&manifest(), false, true, OverwritePolicy::Warn).await;
        assert!(!unmarked.contains("Copies to create"), "{unmarked}");
        assert!(
            unmarked.contains("exists and is not marked as its"),
            "{unmarked}"
        );

        let marked = manifest()
            .replace(
                "metadata: {name: p-vwxyz, namespace: local}",
                "metadata: {name: p-vwxyz, namespace: local, uid: u-1}",
            )
            .replace(
                "metadata: {name: local-p-vwxyz}",
                &format!(
                    "metadata:\n  name: local-p-vwxyz\n  annotations: {{{}: \"local:p-vwxyz\", {}: u-1}}",
                    keys::BACKING_NAMESPACE_OF_ANNOTATION,
                    keys::BACKING_NAMESPACE_UID_ANNOTATION
                ),
            );
        assert_eq!(
            plan_of(&marked, false, true, OverwritePolicy::Warn).await,
            run(false, OverwritePolicy::Warn).await
        );
    }

    #[tokio::test]
    async fn text_report_groups_actions_and_counts_them() {
        let text = run(false, OverwritePolicy::Warn).await;
        let expected = "\
Copies to create (1):
  team-a/test-secret (from local-p-vwxyz/test-secret)

Secrets to overwrite with a copy (1):
  team-b/test-secret (from local-p-vwxyz/test-secret): an existing secret that is not a copy

Plan: 1 to create, 1 to overwrite, 0 to update, 0 to recreate, 0 to delete, 0 conflicts, 0 repairs.
";
        assert_eq!(text, expected);
    }

    #[tokio::test]
    async fn deny_policy_reports_a_conflict() {
        let text = run(false, OverwritePolicy::Deny).await;
        assert!(text.contains("Conflicts (not written) (1):"), "{text}");
        assert!(text.contains("1 conflict,"), "{text}");
    }

    #[tokio::test]
    async fn json_report_has_rows_and_summary_and_no_data() {
        let text = run(true, OverwritePolicy::Warn).await;
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["summary"]["create"], 1);
        assert_eq!(value["summary"]["overwrite"], 1);
        assert_eq!(value["actions"][0]["action"], "create");
        assert_eq!(value["actions"][0]["namespace"], "team-a");
        assert_eq!(value["actions"][0]["origin"], "local-p-vwxyz/test-secret");
        for secret in ["ZG9n", "dog", "hunter2", "aHVudGVyMg"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[test]
    fn an_empty_plan_says_so() {
        assert_eq!(render_text(&[]), "No changes: every copy is in place.\n");
    }
}
