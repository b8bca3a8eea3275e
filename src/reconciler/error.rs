//! The reconciler's errors. Each variant names its metric label (`errors_total{error=...}`).

/// Why an action failed. Conflicts and vanished targets are not errors: they requeue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    /// The apiserver refused the write for good (400, 403, 413, 422): sending it again cannot help until
    /// something changes, so it raises an Event and backs off.
    #[error("the apiserver refused the write ({code} {reason}): {message}")]
    Refused {
        code: u16,
        reason: String,
        message: String,
    },
    /// The write went through, but the apiserver stored something other than what was sent: a
    /// mutating admission webhook or policy changes copies (or the labels the reconciler repairs).
    /// Writing again would be changed again (and the watch event of each write would start the
    /// next round): an Event and a backoff.
    #[error(
        "the apiserver stored the object with other {what} than were written: a mutating \
         admission webhook or policy changes it, so it cannot be kept as wanted"
    )]
    Altered { what: &'static str },
    #[error("lost leadership before writing")]
    NotLeading,
}

impl Error {
    /// The `error` label of the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Refused { .. } => "refused",
            Self::Altered { .. } => "altered",
            Self::NotLeading => "not_leading",
        }
    }

    /// The `reason` label of the copy failures metric: the apiserver's reason, or `transport` when
    /// it did not answer.
    pub fn failure_reason(&self) -> String {
        match self {
            Self::Refused { reason, code, .. } => reason_or_code(reason, *code),
            Self::Kube(kube::Error::Api(status)) => reason_or_code(&status.reason, status.code),
            Self::Kube(_) => "transport".to_owned(),
            Self::Altered { .. } => "Altered".to_owned(),
            Self::NotLeading => "not_leading".to_owned(),
        }
    }
}

/// Status codes after which the same write will fail again: the request itself is wrong (400), not
/// allowed (403), too large for the apiserver (413), or invalid (422).
fn is_permanent(code: u16) -> bool {
    matches!(code, 400 | 403 | 413 | 422)
}

fn reason_or_code(reason: &str, code: u16) -> String {
    // Bounded label values: the apiserver's reasons are a fixed set of CamelCase words.
    if !reason.is_empty() && reason.len() <= 40 && reason.chars().all(|c| c.is_ascii_alphanumeric())
    {
        reason.to_owned()
    } else {
        code.to_string()
    }
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status) if is_permanent(status.code) => Self::Refused {
                code: status.code,
                reason: reason_or_code(&status.reason, status.code),
                message: status.message.clone(),
            },
            _ => Self::Kube(error),
        }
    }
}

/// The HTTP status of an API error, if the apiserver answered.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Status::failure("m", reason).with_code(code).boxed())
    }

    #[test]
    fn only_bad_forbidden_too_large_and_invalid_writes_are_refusals() {
        for code in [400, 403, 413, 422] {
            assert!(matches!(
                Error::from(api(code, "Invalid")),
                Error::Refused { .. }
            ));
        }
        for code in [404, 409, 429, 500, 503] {
            assert!(matches!(Error::from(api(code, "x")), Error::Kube(_)));
        }
        assert_eq!(Error::from(api(422, "Invalid")).failure_reason(), "Invalid");
        assert_eq!(
            Error::from(api(400, "Failed to parse error data")).failure_reason(),
            "400"
        );
    }
}
