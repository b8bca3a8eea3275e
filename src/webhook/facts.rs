//! What a review needs from the cluster beyond the index, fetched for [`crate::policy::Review`]:
//! SubjectAccessReviews for `manage-namespaces` (N1), a Project's status (N5) and namespaces (P4),
//! and the type of the secret holding a name (S1's message). A failed look-up is an unknown fact, which the rules treat as such (N1 refuses).

use crate::keys::{self, ProjectId};
use crate::policy::{Facts, Needs};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::Instrument;

/// How long a review may wait for its look-ups, all together. The apiserver gives up on the
/// review after the entry's `timeoutSeconds` (2–5 s) anyway; a look-up that hangs (an apiserver or
/// etcd that stalls, a connection that never answers: the client has no read timeout, its watches
/// need none) would otherwise hold a review slot and an index snapshot long after.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(4);

/// Fetches what `needs` asks for within [`LOOKUP_DEADLINE`]; without a client (tests of the pure
/// path), or past the deadline, every fact is unknown (N1, N5 and P4 then refuse: they fail closed).
pub async fn fetch(
    client: Option<&kube::Client>,
    request: &AdmissionRequest<DynamicObject>,
    needs: Needs,
) -> Facts {
    fetch_within(LOOKUP_DEADLINE, client, request, needs).await
}

async fn fetch_within(
    deadline: Duration,
    client: Option<&kube::Client>,
    request: &AdmissionRequest<DynamicObject>,
    needs: Needs,
) -> Facts {
    let Some(client) = client else {
        return Facts::default();
    };
    match tokio::time::timeout(deadline, fetch_all(client, request, needs)).await {
        Ok(facts) => facts,
        Err(_) => {
            tracing::warn!(
                deadline = ?deadline,
                "the apiserver did not answer a review's look-ups in time; deciding without them"
            );
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
    let may_update_project_status = match &needs.status_review {
        Some(project) => may_update_status(client, request, project).await,
        None => None,
    };
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
            tracing::warn!(error = %e, "SubjectAccessReview failed");
            None
        }
    }
}

/// S1: the type of the secret that holds a name, for the denial message. Only the type is kept.
async fn secret_type(client: &kube::Client, namespace: &str, name: &str) -> Option<String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(secret) => secret.and_then(|s| s.type_),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the existing secret's type");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ProjectId;
    use crate::policy::testing::{admission, namespace_in_json, request};
    use std::time::Instant;

    #[tokio::test]
    async fn an_apiserver_that_never_answers_leaves_the_facts_unknown_by_the_deadline() {
        // Accepts connections and reads nothing back: a stalled apiserver, as far as a client
        // without a read timeout can tell.
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
        let facts = tokio::time::timeout(
            Duration::from_secs(30),
            fetch_within(deadline, Some(&client), &joining, needs),
        )
        .await
        .expect("the look-ups end at their deadline, not the client's");
        assert!(started.elapsed() >= deadline);
        assert_eq!(facts, Facts::default(), "no answer is an unknown answer");
        held.abort();
    }
}
