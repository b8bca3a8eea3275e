//! The command line: `serve`, `certs`, `plan`. Every flag also reads an environment variable.

use crate::plan::{OverwritePolicy, ProtectedNamespaces, Settings};
use crate::policy::Mode;
use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// `0.1.0 (commit 1a2b3c4d5e6f)`: the release and the commit it was built from (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SCOPED_SECRETS_COMMIT"),
    ")"
);

/// The longest lifetime `certs` gives a certificate: a hundred years. Past a few million days
/// the expiry date overflows; zero or fewer days would write a certificate already expired.
pub const MAX_CERT_DAYS: i64 = 36_500;

#[derive(Parser, Debug)]
#[command(
    name = "scoped-secrets",
    version = VERSION,
    about = "Safe Rancher-style project-scoped secrets: an admission webhook and an embedded reconciler"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the TLS admission webhook, the reconciler and the admin port.
    Serve(Box<ServeArgs>),
    /// Write a CA and a serving certificate into a directory, and print the caBundle.
    Certs(CertsArgs),
    /// Print the copies that would be created, overwritten, updated and deleted.
    Plan(PlanArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the TLS webhook listener.
    #[arg(
        long,
        env = "SCOPED_SECRETS_WEBHOOK_ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub webhook_addr: SocketAddr,
    /// Address of the plain-HTTP admin listener (/livez, /readyz, /metrics).
    #[arg(
        long,
        env = "SCOPED_SECRETS_ADMIN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_addr: SocketAddr,
    /// Serving certificate (PEM); reloaded when it changes.
    #[arg(
        long,
        env = "SCOPED_SECRETS_TLS_CERT",
        default_value = "/certs/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// Serving key (PEM); reloaded when it changes.
    #[arg(long, env = "SCOPED_SECRETS_TLS_KEY", default_value = "/certs/tls.key")]
    pub tls_key: PathBuf,
    /// CA (PEM) whose client certificate a webhook client must present: the apiserver's, as its
    /// --admission-control-config-file gives it. Unset: any client may connect. Re-read when it
    /// changes (a rotated CA holds for new connections without a restart).
    #[arg(long, env = "SCOPED_SECRETS_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// With --client-ca-file: the common names a client certificate may have (unset: any the CA
    /// issues).
    #[arg(
        long,
        env = "SCOPED_SECRETS_ALLOWED_CLIENT_NAMES",
        value_delimiter = ',',
        requires = "client_ca_file"
    )]
    pub allowed_client_names: Vec<String>,
    /// enforce denies; audit turns every denial into a "would deny:" warning.
    #[arg(
        long,
        env = "SCOPED_SECRETS_MODE",
        value_enum,
        default_value = "enforce"
    )]
    pub mode: ModeArg,
    #[command(flatten)]
    pub copies: CopyArgs,
    /// Deny (true) or only warn about (false) changes to copies.
    #[arg(long, env = "SCOPED_SECRETS_PROTECT_COPIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub protect_copies: bool,
    /// The most bytes the originals of one project may take together in memory (data and metadata,
    /// 96 bytes an entry besides); an original that would bring its project past it is refused.
    #[arg(long, env = "SCOPED_SECRETS_MAX_PROJECT_ORIGINAL_BYTES", default_value_t = crate::policy::DEFAULT_MAX_PROJECT_ORIGINAL_BYTES)]
    pub max_project_original_bytes: u64,
    /// Run the reconciler that writes copies (off beside Rancher, whose copier does it).
    #[arg(long, env = "SCOPED_SECRETS_RECONCILER", default_value_t = true, action = clap::ArgAction::Set)]
    pub reconciler: bool,
    /// Create backing namespaces for Projects without one (off beside Rancher); a recorded one then
    /// counts only while it carries the marks the reconciler gives it. With --cluster-id nothing is
    /// created: set it as the management cluster's instance has it, so that both judge alike.
    #[arg(long, env = "SCOPED_SECRETS_MANAGE_BACKING_NAMESPACES", default_value_t = true, action = clap::ArgAction::Set)]
    pub manage_backing_namespaces: bool,
    /// Usernames whose requests skip the rules: the reconciler's own identity, and beside Rancher its copier.
    #[arg(
        long,
        env = "SCOPED_SECRETS_RECONCILER_USERS",
        value_delimiter = ',',
        default_value = "system:serviceaccount:scoped-secrets-system:scoped-secrets"
    )]
    pub reconciler_users: Vec<String>,
    #[command(flatten)]
    pub home: HomeArgs,
    /// Serve the webhook in this downstream cluster (its id, as in its namespaces' project IDs),
    /// deciding from its own namespaces and secrets and the management cluster's Projects of it and
    /// their originals; needs --management-kubeconfig and --reconciler=false.
    #[arg(
        long,
        env = "SCOPED_SECRETS_CLUSTER_ID",
        requires = "management_kubeconfig"
    )]
    pub cluster_id: Option<String>,
    /// With --cluster-id: a read-only kubeconfig of the management cluster (inline credentials only:
    /// no exec, auth-provider, file references or insecure-skip-tls-verify).
    #[arg(
        long,
        env = "SCOPED_SECRETS_MANAGEMENT_KUBECONFIG",
        requires = "cluster_id"
    )]
    pub management_kubeconfig: Option<PathBuf>,
    /// Reviews decided at once (a review takes its slot once its body has arrived); an address
    /// alone may take them all, with others its fair share; past it a review gets HTTP 429.
    #[arg(long, env = "SCOPED_SECRETS_MAX_REVIEWS_IN_FLIGHT", default_value_t = crate::webhook::limits::DEFAULT_MAX_IN_FLIGHT)]
    pub max_reviews_in_flight: usize,
    /// Bytes of request bodies over 64 KiB buffered at once, reserved by their declared length (at
    /// least 7 MiB), half of it at most from one client address (at least 7 MiB); past it HTTP 429
    /// before the body is read.
    #[arg(long, env = "SCOPED_SECRETS_MAX_LARGE_BODY_BYTES", default_value_t = crate::webhook::limits::DEFAULT_LARGE_BODY_BUDGET)]
    pub max_large_body_bytes: usize,
    /// Bytes per second at which the bytes of request bodies past their first 64 KiB are read, all
    /// together (0: no limit; at least 7 MiB/s). One large body arriving alone is read at once; a
    /// stream of them is slowed.
    #[arg(long, env = "SCOPED_SECRETS_LARGE_BODY_BYTES_PER_SECOND", default_value_t = crate::webhook::limits::DEFAULT_LARGE_BODY_RATE)]
    pub large_body_bytes_per_second: usize,
    /// Open webhook connections at once; past it a new connection closes one holding its slot
    /// without using it (waiting for a request or stalled on its body), else has a busy one close
    /// after its answer, of an address over its fair share holding more connections than the
    /// newcomer's, or is closed at once when none can be. The bodies being read take up to this
    /// many times 64 KiB.
    #[arg(long, env = "SCOPED_SECRETS_MAX_CONNECTIONS", default_value_t = crate::webhook::server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Open webhook connections from one address at once (default: half of --max-connections);
    /// past it a new connection from that address is closed at once, so one client cannot take
    /// the slots the apiserver needs.
    #[arg(long, env = "SCOPED_SECRETS_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// TLS handshakes one address may begin a second, after a burst of as many as it may hold
    /// connections (0: no limit); past it a new connection from that address is closed before its
    /// handshake, which would cost a key exchange and a signature.
    #[arg(long, env = "SCOPED_SECRETS_HANDSHAKES_PER_SECOND_PER_ADDRESS", default_value_t = crate::webhook::handshake_rate::DEFAULT_HANDSHAKES_PER_SECOND)]
    pub handshakes_per_second_per_address: u32,
    /// Seconds the webhook keeps serving after SIGTERM, every answer closing its connection so
    /// that the apiserver closes it between reviews, before it closes the idle connections left
    /// (a review sent on one just as it closes fails). Ends early once no connection is open.
    /// With the in-flight reviews' 15 s it must fit in the pod's termination grace period.
    #[arg(long, env = "SCOPED_SECRETS_DRAIN_WINDOW_SECONDS", default_value_t = crate::webhook::server::DEFAULT_DRAIN_WINDOW.as_secs())]
    pub drain_window_seconds: u64,
    /// Log format. What is logged comes from RUST_LOG; unset, `info` with only errors from the
    /// TLS stack (`info,rustls=error,tokio_rustls=error,hyper_rustls=error`): rustls logs what any
    /// client sends in its handshake at warn level, so keep `rustls=error` in a RUST_LOG you set.
    #[arg(
        long,
        env = "SCOPED_SECRETS_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Enforce,
    Audit,
}

impl From<ModeArg> for Mode {
    fn from(value: ModeArg) -> Self {
        match value {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverwritePolicyArg {
    Warn,
    Deny,
}

impl From<OverwritePolicyArg> for OverwritePolicy {
    fn from(value: OverwritePolicyArg) -> Self {
        match value {
            OverwritePolicyArg::Warn => OverwritePolicy::Warn,
            OverwritePolicyArg::Deny => OverwritePolicy::Deny,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory to write ca.crt, ca.key, tls.crt and tls.key into; an existing CA there is reused.
    #[arg(long, env = "SCOPED_SECRETS_CERTS_DIR", default_value = "certs")]
    pub out: PathBuf,
    /// DNS names of the serving certificate.
    #[arg(long = "dns", env = "SCOPED_SECRETS_CERTS_DNS", value_delimiter = ',', default_values_t = [
        "scoped-secrets.scoped-secrets-system.svc".to_owned(),
        "scoped-secrets.scoped-secrets-system.svc.cluster.local".to_owned(),
    ])]
    pub dns_names: Vec<String>,
    /// IP addresses of the serving certificate.
    #[arg(long = "ip", env = "SCOPED_SECRETS_CERTS_IP", value_delimiter = ',')]
    pub ips: Vec<IpAddr>,
    /// Lifetime of a new CA, in days (1 to 36,500).
    #[arg(long, env = "SCOPED_SECRETS_CERTS_CA_DAYS", default_value_t = 3650,
          value_parser = clap::value_parser!(i64).range(1..=MAX_CERT_DAYS))]
    pub ca_days: i64,
    /// Lifetime of the serving certificate, in days (1 to 36,500).
    #[arg(long, env = "SCOPED_SECRETS_CERTS_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(i64).range(1..=MAX_CERT_DAYS))]
    pub days: i64,
}

#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    /// A manifest whose Secrets, Namespaces and Projects are laid over the cluster's state.
    #[arg(short = 'f', long = "filename", env = "SCOPED_SECRETS_PLAN_FILE")]
    pub file: Option<PathBuf>,
    /// Do not read the cluster: plan the manifest alone.
    #[arg(long, env = "SCOPED_SECRETS_PLAN_OFFLINE")]
    pub offline: bool,
    /// Print JSON instead of text.
    #[arg(long, env = "SCOPED_SECRETS_PLAN_JSON")]
    pub json: bool,
    /// Plan as `serve` with this setting does: backing namespaces created for Projects without
    /// one, and a recorded one counted only while it carries the reconciler's marks (false: as
    /// beside Rancher, whose backing namespaces carry none).
    #[arg(long, env = "SCOPED_SECRETS_MANAGE_BACKING_NAMESPACES", default_value_t = true, action = clap::ArgAction::Set)]
    pub manage_backing_namespaces: bool,
    #[command(flatten)]
    pub copies: CopyArgs,
    #[command(flatten)]
    pub home: HomeArgs,
    /// Seconds each request to a downstream cluster may take (connect, read, write).
    #[arg(
        long,
        env = "SCOPED_SECRETS_PLAN_CLUSTER_TIMEOUT",
        default_value_t = 10
    )]
    pub cluster_timeout: u64,
}

impl PlanArgs {
    /// Where downstream clusters are registered, and their timeout.
    pub fn clusters(&self) -> crate::plan_downstream::ClusterOptions {
        crate::plan_downstream::ClusterOptions {
            namespace: self.home.lease_namespace.clone(),
            local_cluster_id: self.home.local_cluster_id.clone(),
            timeout: std::time::Duration::from_secs(self.cluster_timeout.max(1)),
        }
    }
}

/// Where the product lives and which cluster is its own, shared by `serve` and `plan`.
#[derive(Args, Debug, Clone)]
pub struct HomeArgs {
    /// The product's namespace (deploy/ sets it to the pod's own): the leader-election Lease, never
    /// copied into, and where downstream clusters are registered.
    #[arg(
        long,
        env = "SCOPED_SECRETS_LEASE_NAMESPACE",
        default_value = "scoped-secrets-system"
    )]
    pub lease_namespace: String,
    /// The management cluster's id, the cluster part of its own project IDs; downstream clusters are
    /// registered by Secrets in --lease-namespace labelled scoped-secrets.io/cluster, each read on its
    /// own.
    #[arg(long, env = "SCOPED_SECRETS_LOCAL_CLUSTER_ID", default_value = "local")]
    pub local_cluster_id: String,
}

/// What decides which copies exist, shared by `serve` (the webhook and the reconciler) and `plan`,
/// so that all three give the same answers.
#[derive(Args, Debug, Clone)]
pub struct CopyArgs {
    /// warn: overwriting a non-copy secret is admitted with a warning; deny: refused without consent.
    #[arg(
        long,
        env = "SCOPED_SECRETS_OVERWRITE_POLICY",
        value_enum,
        default_value = "warn"
    )]
    pub overwrite_policy: OverwritePolicyArg,
    /// Namespaces that never join a project nor receive copies (`serve` adds its own namespace,
    /// --lease-namespace).
    #[arg(
        long,
        env = "SCOPED_SECRETS_PROTECTED_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system,kube-public,kube-node-lease,scoped-secrets-system"
    )]
    pub protected_namespaces: Vec<String>,
}

impl CopyArgs {
    /// The settings, with `own_namespace` protected too.
    pub fn settings(&self, own_namespace: &str) -> Settings {
        Settings {
            overwrite_policy: self.overwrite_policy.into(),
            protected: ProtectedNamespaces::new(&self.protected_namespaces, own_namespace),
        }
    }
}
