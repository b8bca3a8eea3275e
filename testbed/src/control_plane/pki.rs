//! The control plane's certificates, tokens and kubeconfigs: a throwaway CA whose serving
//! certificate names 127.0.0.1, static tokens for the admin, the product's service account and the
//! controller manager, and kubeconfigs that use them.

use anyhow::Result;
use scoped_secrets::certs::{self, Authority};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The admin token of the throwaway local control plane (it only listens on 127.0.0.1).
pub(super) const ADMIN_TOKEN: &str = "scoped-secrets-local-admin";
/// A token for the product's own service-account identity, so that the server under test runs with
/// exactly the RBAC of `deploy/` and the webhook's reconciler-identity rules see the real username.
pub(super) const SERVICE_ACCOUNT_TOKEN: &str = "scoped-secrets-local-service-account";
pub const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:scoped-secrets-system:scoped-secrets";
const SERVICE_ACCOUNT_GROUPS: &str =
    "system:serviceaccounts,system:serviceaccounts:scoped-secrets-system,system:authenticated";

/// The controller manager's identity. With `--use-service-account-credentials=false` every controller
/// acts as this one user, and the namespace controller must delete every kind of object; the
/// bootstrap role `system:kube-controller-manager` grants only what the one-identity-per-controller
/// mode needs (it cannot even delete a ConfigMap), hence `system:masters`.
pub(super) const CONTROLLER_MANAGER_TOKEN: &str = "scoped-secrets-local-controller-manager";
const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";

pub(super) struct Pki {
    pub(super) ca_pem: String,
    pub(super) ca_cert: PathBuf,
    pub(super) serving_cert: PathBuf,
    pub(super) serving_key: PathBuf,
    pub(super) sa_key: PathBuf,
    pub(super) sa_pub: PathBuf,
    pub(super) tokens: PathBuf,
}

pub(super) fn write_pki(dir: &Path, address: IpAddr) -> Result<Pki> {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki)?;
    let ca = Authority::generate("local-control-plane CA", 30)?;
    let serving = ca.issue(
        &["localhost".to_owned(), "kubernetes.default.svc".to_owned()],
        // 10.0.0.1: the `kubernetes` Service's address in --service-cluster-ip-range.
        &[
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 1]),
            address,
        ],
        30,
        false,
    )?;
    let sa_key = rcgen::KeyPair::generate()?;
    let out = Pki {
        ca_pem: ca.cert_pem.clone(),
        ca_cert: pki.join("ca.crt"),
        serving_cert: pki.join("apiserver.crt"),
        serving_key: pki.join("apiserver.key"),
        sa_key: pki.join("service-account.key"),
        sa_pub: pki.join("service-account.pub"),
        tokens: pki.join("tokens.csv"),
    };
    certs::write_file(&out.ca_cert, &ca.cert_pem, false)?;
    certs::write_file(&out.serving_cert, &serving.cert_pem, false)?;
    certs::write_file(&out.serving_key, &serving.key_pem, true)?;
    certs::write_file(&out.sa_key, &sa_key.serialize_pem(), true)?;
    certs::write_file(&out.sa_pub, &sa_key.public_key_pem(), false)?;
    certs::write_file(
        &out.tokens,
        &format!(
            "{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n\
             {SERVICE_ACCOUNT_TOKEN},{SERVICE_ACCOUNT_USER},sa-uid,\"{SERVICE_ACCOUNT_GROUPS}\"\n\
             {CONTROLLER_MANAGER_TOKEN},{CONTROLLER_MANAGER_USER},kcm-uid,\"system:masters\"\n"
        ),
        true,
    )?;
    Ok(out)
}

pub(super) fn write_kubeconfig(
    path: &Path,
    server: SocketAddr,
    ca_pem: &str,
    token: &str,
) -> Result<()> {
    Ok(certs::write_file(
        path,
        &kubeconfig_yaml(server, ca_pem, Some(token)),
        true,
    )?)
}

/// A kubeconfig for `https://<server>` trusting the local CA, with a token or anonymous.
pub(super) fn kubeconfig_yaml(server: SocketAddr, ca_pem: &str, token: Option<&str>) -> String {
    let ca = certs::base64_encode(ca_pem.as_bytes());
    let user = token.map_or_else(|| "{}".to_owned(), |t| format!("{{token: {t}}}"));
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://{server}
    certificate-authority-data: {ca}
users:
- name: user
  user: {user}
contexts:
- name: local
  context:
    cluster: local
    user: user
    namespace: default
current-context: local
"
    )
}
