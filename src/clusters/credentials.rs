//! Reading a downstream cluster's registration: a Secret labelled `scoped-secrets.io/cluster:
//! <cluster-id>` holding a kubeconfig under key `value` (the shape Cluster API and Rancher give
//! cluster credentials). Pure: nothing here touches the network or the file system.
//!
//! Only inline credentials are accepted. A kubeconfig is code as much as data: an `exec` plugin or an
//! `auth-provider` runs programs inside the product's pod, a file reference reads its files (the
//! service-account token among them), and `insecure-skip-tls-verify` hands the credentials to whoever
//! answers. Whoever may write a Secret in the product's namespace must not gain any of that.

use kube::config::{AuthInfo, Cluster, Kubeconfig};
use std::fmt;

/// Why a registration is refused. Never carries a value from the kubeconfig: the text goes into an
/// Event and the log, and a kubeconfig is full of secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The label value is not a usable cluster id.
    InvalidClusterId(String),
    /// No key `value` in the Secret's data.
    MissingKubeconfig,
    /// `value` is not UTF-8 text.
    NotText,
    /// `value` does not parse as a kubeconfig; only the position is kept.
    Unparsable { line: usize, column: usize },
    /// The context to use cannot be determined or names a missing cluster or user.
    NoContext(&'static str),
    /// The cluster entry has no `server`, or a server that is not `https://`.
    Server(&'static str),
    /// A field that is refused outright, by its kubeconfig name.
    Forbidden(&'static str),
    /// The user entry holds no inline credential (token, or client certificate and key).
    NoCredential,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::InvalidClusterId(why) => write!(f, "the cluster id is not usable: {why}"),
            Refusal::MissingKubeconfig => {
                f.write_str("the Secret has no kubeconfig under key `value`")
            }
            Refusal::NotText => f.write_str("the kubeconfig under key `value` is not UTF-8 text"),
            Refusal::Unparsable { line, column } => write!(
                f,
                "the kubeconfig under key `value` does not parse (line {line}, column {column})"
            ),
            Refusal::NoContext(why) => write!(f, "the kubeconfig's context: {why}"),
            Refusal::Server(why) => write!(f, "the kubeconfig's cluster: {why}"),
            Refusal::Forbidden(field) => write!(
                f,
                "the kubeconfig uses `{field}`, which is refused: only inline credentials \
                 (token, client certificate and key, CA data) are accepted"
            ),
            Refusal::NoCredential => f.write_str(
                "the kubeconfig's user has no inline credential (`token`, or \
                 `client-certificate-data` with `client-key-data`)",
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// A kubeconfig that passed every check, reduced to its one context: safe to turn into a client.
#[derive(Clone, Debug)]
pub struct InlineKubeconfig(Kubeconfig);

impl InlineKubeconfig {
    /// The checked kubeconfig, holding exactly one context, cluster and user.
    pub fn kubeconfig(&self) -> &Kubeconfig {
        &self.0
    }

    /// The apiserver address, for Events and logs (no credential in it).
    pub fn server(&self) -> &str {
        self.0
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.as_deref())
            .unwrap_or_default()
    }
}

/// A cluster id is used in namespace names' project IDs (`<cluster>:<project>`), metric labels and
/// Lease names: a DNS-1123 label, as Rancher's `c-abc123` and `local` are.
pub fn check_cluster_id(id: &str) -> Result<(), Refusal> {
    let valid = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(Refusal::InvalidClusterId(
            "it must be a DNS-1123 label (lower-case letters, digits and '-', at most 63)".into(),
        ))
    }
}

/// Reads the kubeconfig bytes of a registration Secret (`data.value`) and accepts it only if it
/// holds inline credentials for one context.
pub fn read_kubeconfig(value: Option<&[u8]>) -> Result<InlineKubeconfig, Refusal> {
    let bytes = value.ok_or(Refusal::MissingKubeconfig)?;
    let text = std::str::from_utf8(bytes).map_err(|_| Refusal::NotText)?;
    // serde_yaml's messages can quote the offending value (a token, a key): keep the position only.
    let kubeconfig: Kubeconfig = serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        Refusal::Unparsable { line, column }
    })?;
    only_inline(kubeconfig)
}

fn only_inline(kubeconfig: Kubeconfig) -> Result<InlineKubeconfig, Refusal> {
    let context_name = match (&kubeconfig.current_context, kubeconfig.contexts.as_slice()) {
        (Some(name), _) => name.clone(),
        (None, [only]) => only.name.clone(),
        (None, []) => return Err(Refusal::NoContext("it has no context")),
        (None, _) => {
            return Err(Refusal::NoContext(
                "it has several contexts and no `current-context`",
            ));
        }
    };
    let mut context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .cloned()
        .ok_or(Refusal::NoContext("`current-context` names no context"))?;
    let inner = context
        .context
        .as_mut()
        .ok_or(Refusal::NoContext("the context is empty"))?;
    let mut cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == inner.cluster)
        .cloned()
        .ok_or(Refusal::NoContext("the context names no listed cluster"))?;
    let user_name = inner
        .user
        .clone()
        .ok_or(Refusal::NoContext("the context names no user"))?;
    let mut user = kubeconfig
        .auth_infos
        .iter()
        .find(|u| u.name == user_name)
        .cloned()
        .ok_or(Refusal::NoContext("the context names no listed user"))?;

    check_cluster(
        cluster
            .cluster
            .as_ref()
            .ok_or(Refusal::Server("it is empty"))?,
    )?;
    check_user(user.auth_info.as_ref().ok_or(Refusal::NoCredential)?)?;
    // The namespace of the context is irrelevant (every request names its namespace) and extensions
    // are someone else's data: neither is carried.
    inner.namespace = None;
    inner.extensions = None;
    if let Some(c) = cluster.cluster.as_mut() {
        c.extensions = None;
    }
    if let Some(u) = user.auth_info.as_mut() {
        u.extensions = None;
    }
    Ok(InlineKubeconfig(Kubeconfig {
        current_context: Some(context.name.clone()),
        contexts: vec![context],
        clusters: vec![cluster],
        auth_infos: vec![user],
        ..Kubeconfig::default()
    }))
}

fn check_cluster(cluster: &Cluster) -> Result<(), Refusal> {
    if cluster.insecure_skip_tls_verify == Some(true) {
        return Err(Refusal::Forbidden("insecure-skip-tls-verify"));
    }
    if cluster.certificate_authority.is_some() {
        return Err(Refusal::Forbidden("certificate-authority"));
    }
    // An exec plugin's per-cluster configuration rides in this extension; refuse it with the plugin.
    let exec_extension = cluster
        .extensions
        .iter()
        .flatten()
        .any(|e| e.name == "client.authentication.k8s.io/exec");
    if exec_extension {
        return Err(Refusal::Forbidden("exec"));
    }
    match cluster.server.as_deref() {
        None | Some("") => Err(Refusal::Server("it has no `server`")),
        Some(server) if !server.starts_with("https://") => {
            Err(Refusal::Server("its `server` is not an https:// address"))
        }
        Some(_) => Ok(()),
    }
}

fn check_user(user: &AuthInfo) -> Result<(), Refusal> {
    let forbidden = [
        (user.exec.is_some(), "exec"),
        (user.auth_provider.is_some(), "auth-provider"),
        (user.token_file.is_some(), "tokenFile"),
        (user.client_certificate.is_some(), "client-certificate"),
        (user.client_key.is_some(), "client-key"),
        // Basic authentication left Kubernetes in 1.19; a password is no credential any cluster takes.
        (user.password.is_some(), "password"),
    ];
    if let Some((_, field)) = forbidden.into_iter().find(|(present, _)| *present) {
        return Err(Refusal::Forbidden(field));
    }
    let has_token = user.token.is_some();
    let has_certificate = user.client_certificate_data.is_some() && user.client_key_data.is_some();
    if has_token || has_certificate {
        Ok(())
    } else {
        Err(Refusal::NoCredential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cr3t-token-value";

    fn kubeconfig(cluster_extra: &str, user: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
current-context: c-abc123
contexts:
- name: c-abc123
  context: {{cluster: c-abc123, user: copier, namespace: default}}
clusters:
- name: c-abc123
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: Y2E=
{cluster_extra}
users:
- name: copier
  user:
{user}
"
        )
    }

    fn read(text: &str) -> Result<InlineKubeconfig, Refusal> {
        read_kubeconfig(Some(text.as_bytes()))
    }

    #[test]
    fn a_token_or_an_inline_client_certificate_is_accepted() {
        let token = read(&kubeconfig("", &format!("    token: {TOKEN}"))).unwrap();
        assert_eq!(token.server(), "https://127.0.0.1:6443");
        let kc = token.kubeconfig();
        assert_eq!(
            (kc.contexts.len(), kc.clusters.len(), kc.auth_infos.len()),
            (1, 1, 1)
        );
        let certificate = kubeconfig(
            "",
            "    client-certificate-data: Y2VydA==\n    client-key-data: a2V5",
        );
        assert!(read(&certificate).is_ok());
    }

    #[test]
    fn programs_files_and_unverified_tls_are_refused_by_name() {
        let cases = [
            (
                kubeconfig(
                    "",
                    "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}",
                ),
                "exec",
            ),
            (
                kubeconfig("", "    auth-provider: {name: gcp, config: {}}"),
                "auth-provider",
            ),
            (
                kubeconfig(
                    "",
                    "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
                ),
                "tokenFile",
            ),
            (
                kubeconfig(
                    "",
                    "    client-certificate: /etc/cert\n    client-key-data: a2V5",
                ),
                "client-certificate",
            ),
            (
                kubeconfig("", &format!("    token: {TOKEN}\n    client-key: /etc/key")),
                "client-key",
            ),
            (
                kubeconfig(
                    "    insecure-skip-tls-verify: true",
                    &format!("    token: {TOKEN}"),
                ),
                "insecure-skip-tls-verify",
            ),
            (
                kubeconfig(
                    "    certificate-authority: /etc/ca.crt",
                    &format!("    token: {TOKEN}"),
                ),
                "certificate-authority",
            ),
            (
                kubeconfig(
                    "    extensions:\n    - name: client.authentication.k8s.io/exec\n      extension: {}",
                    &format!("    token: {TOKEN}"),
                ),
                "exec",
            ),
            (
                kubeconfig("", "    username: admin\n    password: hunter2"),
                "password",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(
                read(&text).unwrap_err(),
                Refusal::Forbidden(field),
                "{text}"
            );
        }
    }

    #[test]
    fn a_user_without_an_inline_credential_is_refused() {
        assert_eq!(
            read(&kubeconfig("", "    username: admin")).unwrap_err(),
            Refusal::NoCredential
        );
        assert_eq!(
            read(&kubeconfig("", "    client-certificate-data: Y2VydA==")).unwrap_err(),
            Refusal::NoCredential
        );
    }

    #[test]
    fn the_context_must_resolve_to_a_listed_cluster_and_user() {
        let text = kubeconfig("", &format!("    token: {TOKEN}"));
        let missing = text.replace("current-context: c-abc123", "current-context: other");
        assert!(matches!(read(&missing), Err(Refusal::NoContext(_))));
        let no_user = text.replace("user: copier,", "user: nobody,");
        assert!(matches!(read(&no_user), Err(Refusal::NoContext(_))));
        let plain = text.replace("https://", "http://");
        assert!(matches!(read(&plain), Err(Refusal::Server(_))));
    }

    #[test]
    fn unreadable_values_are_refused_without_quoting_them() {
        assert_eq!(
            read_kubeconfig(None).unwrap_err(),
            Refusal::MissingKubeconfig
        );
        assert_eq!(
            read_kubeconfig(Some(&[0xff, 0xfe])).unwrap_err(),
            Refusal::NotText
        );
        // A type error whose value is the token: the refusal names a position, never the value.
        let bad = kubeconfig(
            &format!("    insecure-skip-tls-verify: {TOKEN}"),
            "    token: x",
        );
        let refusal = read(&bad).unwrap_err();
        assert!(
            matches!(refusal, Refusal::Unparsable { line, .. } if line > 0),
            "{refusal:?}"
        );
        assert!(!refusal.to_string().contains(TOKEN));
        for forbidden in [
            kubeconfig("", &format!("    token: {TOKEN}\n    tokenFile: /x")),
            kubeconfig(
                "    insecure-skip-tls-verify: true",
                &format!("    token: {TOKEN}"),
            ),
        ] {
            assert!(!read(&forbidden).unwrap_err().to_string().contains(TOKEN));
        }
    }

    #[test]
    fn cluster_ids_are_dns_labels() {
        for good in ["local", "c-abc123", "a"] {
            assert!(check_cluster_id(good).is_ok(), "{good}");
        }
        for bad in ["", "C-ABC", "-a", "a-", "a:b", "a/b", &"x".repeat(64)] {
            assert!(check_cluster_id(bad).is_err(), "{bad}");
        }
    }
}
