//! AdmissionReview in and out: decoding request bodies and turning a policy [`Decision`] into the
//! response the apiserver expects. Pure; the server owns HTTP.
//!
//! A validating endpoint: [`parse_request`] → [`crate::policy::Review`] (`needs`, then the facts,
//! then `decide`) → [`respond`]. A mutating endpoint:
//! [`parse_request`] → [`crate::policy::mutate`] → [`respond`]. A body that does not decode:
//! [`error_review`] when its uid could be read, else HTTP 400 with [`error_body`].

use crate::policy::Decision;
use crate::webhook::lean;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND,
};
use kube::core::{DynamicObject, Status, TypeMeta};

/// The most characters of a body's own text (serde's message, which quotes what it found; a
/// version; a kind) an error repeats. A forged body can make them megabytes, and the error is
/// logged and sent back.
pub const QUOTED_LIMIT: usize = 400;

/// `text` from a body, cut to [`QUOTED_LIMIT`].
pub fn quoted(text: &str) -> String {
    crate::message::fit(text, QUOTED_LIMIT)
}

/// A body that is not an AdmissionReview we can answer.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not a valid AdmissionReview: {detail}")]
    Malformed {
        /// The request uid, when the body was JSON enough to read it.
        uid: Option<String>,
        /// serde's message, led by the path of the field at fault (`request.object.data: …`).
        detail: String,
    },
    #[error(
        "request body nests arrays or objects deeper than {} levels (at byte {offset})",
        lean::MAX_DEPTH
    )]
    TooDeep { offset: usize },
    #[error(
        "request body is a {found:?}, not an AdmissionReview of {META_API_VERSION_V1} (the only version this webhook is registered for)"
    )]
    WrongVersion { found: String },
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("{endpoint} reviews {covers}, not {kind}")]
    UncoveredKind {
        uid: String,
        kind: String,
        endpoint: &'static str,
        covers: String,
    },
}

impl ReviewError {
    /// The request uid, if it could be read: then the error can be answered as an AdmissionReview.
    pub fn uid(&self) -> Option<&str> {
        match self {
            Self::Malformed { uid, .. } => uid.as_deref(),
            Self::UncoveredKind { uid, .. } => Some(uid),
            Self::TooDeep { .. } | Self::WrongVersion { .. } | Self::NoRequest => None,
        }
    }
}

/// Decodes the request of an AdmissionReview body leanly (see [`lean`]): only what the rules read
/// is kept, whatever the body holds besides.
pub fn parse_request(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, ReviewError> {
    if let Some(offset) = lean::too_deep(body, lean::MAX_DEPTH) {
        return Err(ReviewError::TooDeep { offset });
    }
    let review = match serde_json::from_slice::<lean::Review>(body) {
        Ok(review) => review,
        Err(e) => {
            // A review of another version may fail to decode as v1: name the version first.
            if let Some(found) = other_version(body) {
                return Err(ReviewError::WrongVersion {
                    found: quoted(&found),
                });
            }
            return Err(ReviewError::Malformed {
                uid: readable_uid(body),
                detail: quoted(&located(body, e)),
            });
        }
    };
    if review.api_version != META_API_VERSION_V1 || review.kind != META_KIND {
        return Err(ReviewError::WrongVersion {
            found: quoted(&format!("{}/{}", review.api_version, review.kind)),
        });
    }
    review.request.map(Into::into).ok_or(ReviewError::NoRequest)
}

/// serde's error led by the path of the field at fault (`request.object.data: …`). Found by a
/// second decode, so the path is tracked only for bodies that fail.
fn located(body: &[u8], error: serde_json::Error) -> String {
    let mut json = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, lean::Review>(&mut json) {
        Err(located) => located.to_string(),
        Ok(_) => error.to_string(),
    }
}

/// `apiVersion/kind` of a JSON body that is not an `admission.k8s.io/v1` AdmissionReview.
fn other_version(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Types {
        #[serde(default)]
        api_version: String,
        #[serde(default)]
        kind: String,
    }
    let types: Types = serde_json::from_slice(body).ok()?;
    (types.api_version != META_API_VERSION_V1 || types.kind != META_KIND)
        .then(|| format!("{}/{}", types.api_version, types.kind))
}

/// The uid of a body that is JSON but not a valid AdmissionReview (say, an object we cannot read);
/// everything but the uid is skipped.
fn readable_uid(body: &[u8]) -> Option<String> {
    let only: lean::UidOnly = serde_json::from_slice(body).ok()?;
    Some(only.request.uid)
}

/// The response to `req`: the uid echoed; a denial with `status.code`, `reason` and `message` set
/// (kube's `AdmissionResponse::deny` leaves the code unset); warnings; and a patch with its
/// `patchType` only when the decision carries one, which only mutations do.
pub fn respond(
    req: &AdmissionRequest<DynamicObject>,
    decision: Decision,
) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::from(req);
    if !decision.warnings.is_empty() {
        response.warnings = Some(decision.warnings);
    }
    if let Some(denial) = decision.denial {
        response = failed(response, denial.code, &denial.reason, &denial.message);
    } else if let Some(patch) = decision.patch {
        response = match response.clone().with_patch(patch) {
            Ok(patched) => patched,
            Err(e) => failed(response, 500, "InternalError", &e.to_string()),
        };
    }
    into_v1_review(response)
}

/// The AdmissionReview answering a body we could not decode but whose uid we could read:
/// denied with code 400. `None` when the uid is unknown: answer with [`error_body`] and HTTP 400.
pub fn error_review(err: &ReviewError) -> Option<AdmissionReview<DynamicObject>> {
    let mut response = AdmissionResponse::invalid(err);
    response.uid = err.uid()?.to_owned();
    // serde's message quotes field names and values from the body: keep it one line.
    Some(into_v1_review(failed(
        response,
        400,
        "BadRequest",
        &crate::message::one_line(&err.to_string()),
    )))
}

/// The AdmissionReview admitting, unreviewed and with a warning that says why, a request whose body
/// an advisory entry (`failurePolicy: Ignore`) could not decode: what its outage would do, said.
/// `None` when the uid is unknown (then HTTP 400, which the entry's failure policy also admits).
pub fn unreviewed_review(err: &ReviewError) -> Option<AdmissionReview<DynamicObject>> {
    let mut response = AdmissionResponse::invalid(err);
    response.uid = err.uid()?.to_owned();
    response.allowed = true;
    response.result = Status::success();
    response.warnings = Some(vec![format!(
        "scoped-secrets could not review this request, so its advisory checks were skipped: {}",
        crate::message::one_line(&err.to_string())
    )]);
    Some(into_v1_review(response))
}

/// A Kubernetes `Status` body for an HTTP 400 answer to a body that is not an AdmissionReview.
pub fn error_body(err: &ReviewError) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 400,
        "reason": "BadRequest",
        "message": crate::message::one_line(&err.to_string()),
    })
}

fn failed(
    mut response: AdmissionResponse,
    code: u16,
    reason: &str,
    message: &str,
) -> AdmissionResponse {
    response.allowed = false;
    response.result = Status::failure(message, reason).with_code(code);
    response
}

/// We register for `admission.k8s.io/v1` only; answer in it even if the request's type was lost.
fn into_v1_review(mut response: AdmissionResponse) -> AdmissionReview<DynamicObject> {
    response.types = TypeMeta {
        api_version: META_API_VERSION_V1.to_owned(),
        kind: META_KIND.to_owned(),
    };
    response.into_review()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{BACKING, admission, original_json, request, review_body, world};
    use crate::policy::{Decision, Denial, Facts, mutate, validate};
    use serde_json::{Value, json};

    /// A CREATE of original `name` with an empty project label (the mutator fills it in).
    fn creating_original(name: &str) -> AdmissionRequest<DynamicObject> {
        admission(request(
            "CREATE",
            Some(original_json(name, "", Value::Null)),
            None,
        ))
    }

    fn wire(review: &AdmissionReview<DynamicObject>) -> Value {
        serde_json::to_value(review).expect("serializable")
    }

    #[test]
    fn parses_a_review_and_keeps_its_request() {
        let req = request("CREATE", Some(original_json("db", "", Value::Null)), None);
        let parsed = parse_request(&review_body(req)).expect("valid");
        assert_eq!(parsed.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(parsed.namespace.as_deref(), Some(BACKING));
    }

    #[test]
    fn undecodable_bodies_are_clear_errors() {
        let garbage = parse_request(b"{not json").expect_err("garbage");
        assert_eq!(garbage.uid(), None);
        assert!(error_review(&garbage).is_none());
        let status = error_body(&garbage);
        assert_eq!(status["code"], 400);
        assert!(
            status["message"]
                .as_str()
                .is_some_and(|m| m.contains("not a valid AdmissionReview"))
        );

        let no_request =
            parse_request(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#)
                .expect_err("no request");
        assert!(matches!(no_request, ReviewError::NoRequest));

        let wrong = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":"EXPLODE"}}"#;
        let err = parse_request(wrong).expect_err("bad operation");
        assert_eq!(err.uid(), Some("u-1"));
        let answer = wire(&error_review(&err).expect("uid known"));
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(answer["response"]["status"]["code"], 400);
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    }

    #[test]
    fn an_error_quotes_at_most_a_few_hundred_characters_of_the_body() {
        // serde quotes the value it could not take; a forged body can make it megabytes, and the
        // error is logged and answered.
        let huge = "X".repeat(1 << 20);
        let bodies = [
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u-1","operation":"{huge}"}}}}"#
            ),
            format!(r#"{{"apiVersion":"{huge}","kind":"AdmissionReview"}}"#),
        ];
        for body in bodies {
            let err = parse_request(body.as_bytes()).expect_err("refused");
            let message = err.to_string();
            assert!(
                message.chars().count() <= QUOTED_LIMIT + 200,
                "{} characters",
                message.len()
            );
            assert!(message.contains('…'), "cut, and says so: {message:.300}");
        }
    }

    #[test]
    fn denials_carry_code_reason_and_message() {
        let req = creating_original("db");
        let decision = Decision {
            denial: Some(Denial::forbidden(
                "NameTaken",
                "a secret named \"db\" already exists",
            )),
            warnings: vec!["heads up".to_owned()],
            patch: None,
        };
        let answer = wire(&respond(&req, decision));
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        assert_eq!(response["status"]["reason"], "NameTaken");
        assert_eq!(
            response["status"]["message"],
            "a secret named \"db\" already exists"
        );
        assert_eq!(response["warnings"], json!(["heads up"]));
        assert!(response.get("patch").is_none() && response.get("patchType").is_none());
    }

    #[test]
    fn validating_responses_never_carry_a_patch() {
        // An original with an empty label: the mutator patches it, validation must not.
        let req = creating_original("new");
        let world = world();
        let decision = validate(
            &req,
            &world,
            &crate::policy::testing::config(),
            &Facts::default(),
        );
        let response = &wire(&respond(&req, decision))["response"];
        assert!(response.get("patch").is_none() && response.get("patchType").is_none());
    }

    #[test]
    fn mutating_responses_carry_patch_and_type_together() {
        let req = creating_original("new");
        let response = &wire(&respond(&req, mutate(&req, &world())))["response"];
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        // kube-core serializes the patch bytes as a JSON array of numbers; Go's JSON decoder (the
        // apiserver's) accepts an array for a []byte as well as base64 (checked against encoding/json).
        let bytes: Vec<u8> =
            serde_json::from_value(response["patch"].clone()).expect("patch bytes");
        let ops: Value = serde_json::from_slice(&bytes).expect("a JSON patch");
        assert_eq!(
            ops[0]["path"],
            format!(
                "/metadata/labels/{}",
                crate::keys::PROJECT_SCOPED_LABEL.replace('/', "~1")
            )
        );
        assert!(response.get("warnings").is_none());
    }
}
