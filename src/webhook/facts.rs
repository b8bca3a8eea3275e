//! What a review needs from the cluster beyond the index, fetched for [`crate::policy::Review`]:
//! SubjectAccessReviews for `manage-namespaces` (N1), a Project's status (N5) and namespaces (P4),
//! and the type of the secret holding a name (S1's message). A failed look-up is an unknown fact, which the rules treat as such (N1 refuses).

use super::log_budget::LogBudget;
use crate::keys::{self, ProjectId};
use crate::policy::{Facts, Needs};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// How long a review may wait for its look-ups, all together. The apiserver gives up on the
/// review after the entry's `timeoutSeconds` (2–5 s) anyway; a look-up that hangs (an apiserver or
/// etcd that stalls, a connection that never answers: the client has no read timeout, its watches
/// need none) would otherwise hold a review slot and an index snapshot long after.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(4);

/// Reviews that need look-ups can be sent by anyone who reaches the port (with a user the
/// apiserver refuses to review, or while it is slow): their warnings are kept to a budget.
static LATE_LOOKUP_LINES: LazyLock<LogBudget> = LazyLock::new(LogBudget::new);
static FAILED_ACCESS_REVIEW_LINES: LazyLock<LogBudget> = LazyLock::new(LogBudget::new);

/// When the look-ups of a review that begins them now must have ended: [`LOOKUP_DEADLINE`] from
/// now. A review that fetches in rounds (the project guard) gives all of them this one deadline.
pub fn lookup_deadline() -> Instant {
    Instant::now() + LOOKUP_DEADLINE
}

/// Fetches what `needs` asks for by `deadline` (see [`lookup_deadline`]); without a client (tests
/// of the pure path), or past the deadline, every fact is unknown (N1, N5 and P4 then refuse: they
/// fail closed).
pub async fn fetch(
    deadline: Instant,
    client: Option<&kube::Client>,
    request: &AdmissionRequest<DynamicObject>,
    needs: Needs,
) -> Facts {
    let Some(client) = client else {
        return Facts::default();
    };
    match tokio::time::timeout_at(deadline, fetch_all(client, request, needs)).await {
        Ok(facts) => facts,
        Err(_) => {
            if let Some(left_out) = LATE_LOOKUP_LINES.line() {
                tracing::warn!(
                    deadline = ?LOOKUP_DEADLINE,
                    left_out,
                    "the apiserver did not answer a review's look-ups in time; deciding without them"
                );
            }
            Facts::default()
        }
    }
}

async fn fetch_all(
    client: &kube::Client,
    request: &AdmissionRequest<DynamicObject>,
    needs: Needs,
) -> Facts {
    let mut may_manage = BTreeMap::new();
    for project in needs.access_reviews {
        if let Some(answer) = may_manage_namespaces(client, request, &project).await {
            may_manage.insert(project, answer);
        }
    }
    let mut may_update_project_status = BTreeMap::new();
    for project in needs.status_reviews {
        if let Some(answer) = may_update_status(client, request, &project).await {
            may_update_project_status.insert(project, answer);
        }
    }
    let existing_secret_type = match &needs.secret_type_of {
        Some((namespace, name)) => secret_type(client, namespace, name).await,
        None => None,
    };
    let mut may_update_namespaces = BTreeMap::new();
    for namespace in needs.namespace_update_reviews {
        let attributes = ResourceAttributes {
            version: Some("v1".to_owned()),
            resource: Some("namespaces".to_owned()),
            name: Some(namespace.clone()).filter(|n| !n.is_empty()),
            verb: Some("update".to_owned()),
            ..ResourceAttributes::default()
        };
        if let Some(answer) = access_review(client, request, attributes).await {
            may_update_namespaces.insert(namespace, answer);
        }
    }
    Facts {
        may_manage_namespaces: may_manage,
        may_update_project_status,
        existing_secret_type,
        may_update_namespaces,
    }
}

/// N1: may this user move namespaces into or out of the project? `None` when the review could not
/// be made.
async fn may_manage_namespaces(
    client: &kube::Client,
    request: &AdmissionRequest<DynamicObject>,
    project: &ProjectId,
) -> Option<bool> {
    may(client, request, project, keys::MANAGE_NAMESPACES_VERB, None).await
}

/// N5: may this user update the project's status (and so say which namespace backs it)?
async fn may_update_status(
    client: &kube::Client,
    request: &AdmissionRequest<DynamicObject>,
    project: &ProjectId,
) -> Option<bool> {
    may(client, request, project, "update", Some("status")).await
}

/// A SubjectAccessReview for the requesting user (with groups, uid and extra) on the Project.
async fn may(
    client: &kube::Client,
    request: &AdmissionRequest<DynamicObject>,
    project: &ProjectId,
    verb: &str,
    subresource: Option<&str>,
) -> Option<bool> {
    let attributes = ResourceAttributes {
        group: Some(keys::PROJECT_GROUP.to_owned()),
        version: Some(keys::PROJECT_VERSION.to_owned()),
        resource: Some(keys::PROJECT_PLURAL.to_owned()),
        subresource: subresource.map(str::to_owned),
        namespace: Some(project.cluster.clone()),
        name: Some(project.project.clone()),
        verb: Some(verb.to_owned()),
        ..ResourceAttributes::default()
    };
    access_review(client, request, attributes).await
}

/// A SubjectAccessReview for the requesting user (with groups, uid and extra); `None` when it
/// could not be made.
async fn access_review(
    client: &kube::Client,
    request: &AdmissionRequest<DynamicObject>,
    attributes: ResourceAttributes,
) -> Option<bool> {
    let user = &request.user_info;
    let verb = attributes.verb.clone().unwrap_or_default();
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(attributes),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    match api
        .create(&PostParams::default(), &review)
        .instrument(tracing::debug_span!("subject_access_review", verb = %verb))
        .await
    {
        Ok(answer) => answer.status.map(|s| s.allowed),
        Err(e) => {
            if let Some(left_out) = FAILED_ACCESS_REVIEW_LINES.line() {
                tracing::warn!(error = %e, left_out, "SubjectAccessReview failed");
            }
            None
        }
    }
}

/// S1's type look-ups at once: past it, a review's message goes without the type. The look-up
/// only names what the denial already says (the name is taken), so it is the first thing to
/// shed when forged reviews ask for many at once.
const SECRET_TYPE_LOOKUPS: usize = 4;
static SECRET_TYPE_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(SECRET_TYPE_LOOKUPS);

/// S1: the type of the secret that holds a name, for the denial message. Read as the server's
/// table of the secret (the columns `kubectl get` prints, without the object), from the watch
/// cache (`resourceVersion=0`): never the secret's data, which a full GET would carry into this
/// process (and into the client's log, were its answer not to decode), and no read of etcd for
/// what is only a message.
async fn secret_type(client: &kube::Client, namespace: &str, name: &str) -> Option<String> {
    let _slot = SECRET_TYPE_SLOTS.try_acquire().ok()?;
    // Both names are those of a secret in the index (S1 asks only then): DNS names, nothing to
    // escape.
    let uri = format!(
        "/api/v1/namespaces/{namespace}/secrets/{name}?resourceVersion=0&includeObject=None"
    );
    let request = http::Request::get(uri)
        .header(http::header::ACCEPT, TABLE)
        .body(Vec::new())
        .ok()?;
    // Decoded here, not by `Client::request`, which logs a body it cannot decode: were anything on
    // the way to answer the Secret itself, its data would be logged. Nor is serde's message
    // logged, which can quote the body.
    let text = match client.request_text(request).await {
        Ok(text) => text,
        Err(e) => {
            tracing::debug!(error = %e, "could not read the existing secret's type");
            return None;
        }
    };
    let found = type_in_table(&text);
    if found.is_none() {
        tracing::debug!("the apiserver's answer for the existing secret named no type");
    }
    found
}

/// The `Type` cell of the Table `text`; `None` for anything else (a Secret itself included).
fn type_in_table(text: &str) -> Option<String> {
    let table = serde_json::from_str::<Table>(text).ok()?;
    (table.kind == "Table").then(|| table.cell("Type"))?
}

/// The server-side table of an object (as `kubectl get` asks for it).
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// What S1 reads of a `meta.k8s.io/v1` Table: the columns' names and the row's cells.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Table {
    kind: String,
    column_definitions: Vec<Column>,
    rows: Vec<Row>,
}

#[derive(serde::Deserialize)]
struct Column {
    name: String,
}

#[derive(serde::Deserialize)]
struct Row {
    cells: Vec<serde_json::Value>,
}

impl Table {
    /// The first row's cell in the column `name`, if it is a string.
    fn cell(&self, name: &str) -> Option<String> {
        let column = self
            .column_definitions
            .iter()
            .position(|c| c.name == name)?;
        let cell = self.rows.first()?.cells.get(column)?;
        cell.as_str().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ProjectId;
    use crate::policy::testing::{admission, namespace_in_json, request};
    use std::time::Instant;

    /// A client of an apiserver that accepts connections and reads nothing back (a stalled
    /// apiserver, as far as a client without a read timeout can tell), and the task holding them.
    async fn stalled_client() -> (kube::Client, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let uri = format!("http://{addr}").parse().expect("uri");
        let client = kube::Client::try_from(kube::Config::new(uri)).expect("client");
        (client, held)
    }

    #[tokio::test]
    async fn type_look_ups_past_the_cap_are_shed_at_once() {
        let (client, held) = stalled_client().await;
        let taken = SECRET_TYPE_SLOTS
            .try_acquire_many(SECRET_TYPE_LOOKUPS as u32)
            .expect("the slots are free");
        // With every slot taken the look-up is not made: it would wait on the stalled apiserver.
        let shed = tokio::time::timeout(
            Duration::from_secs(30),
            secret_type(&client, "team-a", "db"),
        )
        .await
        .expect("not sent to the stalled apiserver");
        assert_eq!(shed, None);
        drop(taken);
        let waits = tokio::time::timeout(
            Duration::from_millis(200),
            secret_type(&client, "team-a", "db"),
        );
        assert!(waits.await.is_err(), "with a free slot the look-up is made");
        held.abort();
    }

    #[test]
    fn an_answer_that_is_not_a_table_names_no_type() {
        let secret = serde_json::json!({
            "kind": "Secret", "apiVersion": "v1", "type": "Opaque",
            "metadata": {"name": "web"}, "data": {"key": "c2VjcmV0"}
        });
        assert_eq!(type_in_table(&secret.to_string()), None);
        assert_eq!(type_in_table("not json"), None);
    }

    #[test]
    fn the_type_is_read_from_the_tables_type_column() {
        let table = serde_json::json!({
            "kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "columnDefinitions": [
                {"name": "Name", "type": "string"}, {"name": "Type", "type": "string"},
                {"name": "Data", "type": "string"}, {"name": "Age", "type": "string"}
            ],
            "rows": [{"cells": ["web", "kubernetes.io/tls", 2, "5m"], "object": null}]
        });
        assert_eq!(
            type_in_table(&table.to_string()).as_deref(),
            Some("kubernetes.io/tls")
        );
        let table: Table = serde_json::from_value(table).expect("a table");
        assert_eq!(table.cell("Data"), None, "not a string");
        assert_eq!(table.cell("Missing"), None);
    }

    #[tokio::test]
    async fn an_apiserver_that_never_answers_leaves_the_facts_unknown_by_the_deadline() {
        let (client, held) = stalled_client().await;
        let joining = admission(request(
            "UPDATE",
            Some(namespace_in_json("team-a", "local:p-vwxyz")),
            None,
        ));
        let needs = Needs {
            access_reviews: vec![ProjectId::new("local", "p-vwxyz")],
            ..Needs::default()
        };
        let deadline = Duration::from_millis(300);
        let started = Instant::now();
        let by = tokio::time::Instant::now() + deadline;
        let facts = tokio::time::timeout(
            Duration::from_secs(30),
            fetch(by, Some(&client), &joining, needs),
        )
        .await
        .expect("the look-ups end at their deadline, not the client's");
        assert!(started.elapsed() >= deadline);
        assert_eq!(facts, Facts::default(), "no answer is an unknown answer");
        held.abort();
    }
}
