//! A registration Secret turned into a cluster id and checked credentials.

use super::credentials::{self, InlineKubeconfig, Refusal};
use crate::keys::{CLUSTER_REGISTRATION_LABEL, KUBECONFIG_KEY};
use k8s_openapi::api::core::v1::Secret;

/// A downstream cluster as its registration Secret describes it.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The cluster part of project IDs (`<cluster>:<project>`) this cluster serves.
    pub cluster_id: String,
    pub kubeconfig: InlineKubeconfig,
}

/// `None` for a Secret that is not a registration (no label); a refusal for one that is, but cannot
/// be used.
pub fn read(secret: &Secret) -> Option<Result<Registration, Refusal>> {
    let cluster_id = secret
        .metadata
        .labels
        .as_ref()?
        .get(CLUSTER_REGISTRATION_LABEL)?;
    Some(read_labelled(cluster_id, secret))
}

fn read_labelled(cluster_id: &str, secret: &Secret) -> Result<Registration, Refusal> {
    credentials::check_cluster_id(cluster_id)?;
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(KUBECONFIG_KEY))
        .map(|bytes| bytes.0.as_slice());
    Ok(Registration {
        cluster_id: cluster_id.to_owned(),
        kubeconfig: credentials::read_kubeconfig(value)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    const KUBECONFIG: &str = "current-context: c
contexts: [{name: c, context: {cluster: c, user: u}}]
clusters: [{name: c, cluster: {server: 'https://10.0.0.1:6443'}}]
users: [{name: u, user: {token: abc}}]
";

    fn secret(label: Option<&str>, value: Option<&str>) -> Secret {
        let mut s = Secret::default();
        if let Some(id) = label {
            s.metadata.labels = Some(BTreeMap::from([(
                CLUSTER_REGISTRATION_LABEL.to_owned(),
                id.to_owned(),
            )]));
        }
        if let Some(v) = value {
            s.data = Some(BTreeMap::from([(
                KUBECONFIG_KEY.to_owned(),
                ByteString(v.as_bytes().to_vec()),
            )]));
        }
        s
    }

    #[test]
    fn only_labelled_secrets_are_registrations() {
        assert!(read(&secret(None, Some(KUBECONFIG))).is_none());
        let registration = read(&secret(Some("c-abc123"), Some(KUBECONFIG)))
            .unwrap()
            .unwrap();
        assert_eq!(registration.cluster_id, "c-abc123");
        assert_eq!(registration.kubeconfig.server(), "https://10.0.0.1:6443");
    }

    #[test]
    fn a_bad_label_or_a_missing_kubeconfig_is_refused() {
        assert!(matches!(
            read(&secret(Some("C:1"), Some(KUBECONFIG))),
            Some(Err(Refusal::InvalidClusterId(_)))
        ));
        assert!(matches!(
            read(&secret(Some("c-abc123"), None)),
            Some(Err(Refusal::MissingKubeconfig))
        ));
    }
}
