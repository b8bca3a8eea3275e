//! The management cluster as a downstream cluster's webhook reaches it: a read-only kubeconfig from a
//! file (`--management-kubeconfig`, mounted from a Secret), held to the rules of a registration
//! ([`super::credentials`]): a kubeconfig that could run a program (`exec`, `auth-provider`) or read
//! a file of the webhook's pod is refused before any client is made from it.

use super::credentials::{self, InlineKubeconfig};
use anyhow::{Context, Result, anyhow};
use kube::Client;
use kube::config::KubeConfigOptions;
use std::path::Path;
use std::time::Duration;

/// How long connecting to the management cluster may take (watches keep kube's own read timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads and checks the management kubeconfig at `path`.
pub fn read(path: &Path) -> Result<InlineKubeconfig> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the management kubeconfig {}", path.display()))?;
    // The refusal names a field or a position, never a value: it is safe to print.
    credentials::read_kubeconfig(Some(&bytes)).map_err(|refusal| {
        anyhow!(
            "the management kubeconfig {} is refused: {refusal}",
            path.display()
        )
    })
}

/// A client of the management cluster from the checked kubeconfig at `path`.
pub async fn client(path: &Path) -> Result<Client> {
    let kubeconfig = read(path)?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig.kubeconfig().clone(),
        &KubeConfigOptions::default(),
    )
    .await
    .with_context(|| {
        format!(
            "the management kubeconfig {} cannot make a client",
            path.display()
        )
    })?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    Client::try_from(config).with_context(|| {
        format!(
            "the management kubeconfig {} cannot make a client",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
        file.write_all(text.as_bytes()).expect("written");
        file
    }

    const EXEC: &str = "apiVersion: v1
kind: Config
current-context: m
contexts: [{name: m, context: {cluster: m, user: u}}]
clusters: [{name: m, cluster: {server: 'https://127.0.0.1:6443', certificate-authority-data: Y2E=}}]
users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}}}]
";

    #[test]
    fn an_exec_kubeconfig_is_refused_by_name_and_path() {
        let kubeconfig = file(EXEC);
        let error = format!("{:#}", read(kubeconfig.path()).unwrap_err());
        assert!(error.contains("is refused"), "{error}");
        assert!(error.contains("`exec`"), "{error}");
        assert!(
            error.contains(&kubeconfig.path().display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn an_inline_token_kubeconfig_is_accepted() {
        let inline = EXEC.replace(
            "{exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}}",
            "{token: abc}",
        );
        let kubeconfig = file(&inline);
        assert_eq!(
            read(kubeconfig.path()).expect("accepted").server(),
            "https://127.0.0.1:6443"
        );
    }

    #[test]
    fn a_missing_file_says_which() {
        let error = format!(
            "{:#}",
            read(Path::new("/nonexistent/management")).unwrap_err()
        );
        assert!(
            error.contains("reading the management kubeconfig /nonexistent/management"),
            "{error}"
        );
    }
}
