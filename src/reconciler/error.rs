//! The reconciler's errors. Each variant names its metric label (`errors_total{error=...}`).

/// Why an action failed. Conflicts and vanished targets are not errors: they requeue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    #[error("the apiserver rejected the write as invalid: {0}")]
    Invalid(String),
    #[error("lost leadership before writing")]
    NotLeading,
}

impl Error {
    /// The `error` label of the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Invalid(_) => "invalid",
            Self::NotLeading => "not_leading",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status) if status.code == 422 => Self::Invalid(status.message.clone()),
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
