//! What the fault scenarios share: `scoped-secrets serve` run as real processes against this binary's
//! control plane (as the product's service account, each with its own `POD_NAME`), signals to
//! processes, the control plane's own processes found by their command line, and a client runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use testbed::prelude::*;

/// One `scoped-secrets serve` process, SIGTERMed (so it releases the Lease) when dropped.
pub struct Replica {
    pub name: String,
    child: Child,
    admin: SocketAddr,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

impl Replica {
    /// Starts a replica with `name` as its Lease identity and waits until it is ready.
    pub fn start(name: &str) -> Self {
        Self::start_with(name, &env().sa_kubeconfig)
    }

    /// A replica that reaches the cluster through `kubeconfig` (the service account's).
    pub fn start_with(name: &str, kubeconfig: &Path) -> Self {
        let env = env();
        let certs = env.state_dir.join("certs");
        let admin = free_port();
        let log = std::fs::File::create(env.state_dir.join(format!("{name}.log")))
            .expect("the replica's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_scoped-secrets"))
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .arg("serve")
            .arg(format!("--webhook-addr={}", free_port()))
            .arg(format!("--admin-addr={admin}"))
            .arg(format!(
                "--tls-cert={}",
                certs.join(scoped_secrets::certs::TLS_CERT).display()
            ))
            .arg(format!(
                "--tls-key={}",
                certs.join(scoped_secrets::certs::TLS_KEY).display()
            ))
            .arg("--log-format=text")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("scoped-secrets starts");
        let mut replica = Self {
            name: name.to_owned(),
            child,
            admin,
        };
        eventually(&format!("replica {name} ready"), WAIT_READY, || {
            if let Ok(Some(status)) = replica.child.try_wait() {
                panic!("replica {name} exited: {status}; see its log in the state directory");
            }
            replica
                .get("/readyz")
                .starts_with("HTTP/1.0 200")
                .then_some(())
        });
        replica
    }

    /// What the replica has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(env().state_dir.join(format!("{}.log", self.name)))
            .unwrap_or_default()
    }

    /// A plain HTTP GET on the admin port; empty when it does not answer.
    pub fn get(&self, path: &str) -> String {
        let mut answer = String::new();
        if let Ok(mut stream) = TcpStream::connect_timeout(&self.admin, Duration::from_secs(2)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.admin);
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_string(&mut answer);
            }
        }
        answer
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process gets no chance to release the Lease or finish a round.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed replica is reaped");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }
}

pub const WAIT_READY: Duration = Duration::from_secs(90);

/// Sends `SIG<name>` to `pid` with the machine's `kill`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A process held with SIGSTOP, continued (SIGCONT) when dropped, also when the test panics.
pub struct Stopped(u32);

impl Stopped {
    pub fn stop(pid: u32) -> Self {
        signal(pid, "STOP");
        Self(pid)
    }

    /// The fault itself: keeps the process stopped for `fault`, checking all along (state `T` in
    /// `/proc/<pid>/stat`) that it really is, so a fault that did not hold fails the test instead of
    /// passing as a short one. Then continues it.
    pub fn hold_for(self, fault: Duration) {
        // A stop reaches every thread of a process asynchronously: wait until it has taken hold.
        eventually("the process to stop", Duration::from_secs(5), || {
            (process_state(self.0) == Some('T')).then_some(())
        });
        let until = Instant::now() + fault;
        while Instant::now() < until {
            assert_eq!(
                process_state(self.0),
                Some('T'),
                "process {} is no longer stopped during the fault",
                self.0
            );
            std::thread::park_timeout(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200)),
            );
        }
    }
}

/// A process's state letter (`R`, `S`, `T`, …) from `/proc/<pid>/stat`.
fn process_state(pid: u32) -> Option<char> {
    stat_fields(Path::new(&format!("/proc/{pid}/stat")))?
        .first()?
        .chars()
        .next()
}

/// The fields of a `stat` file (`/proc/<pid>/stat`, `/proc/<pid>/task/<tid>/stat`) after the
/// command name, the state (the 3rd field) first; `None` when it cannot be read (the process or
/// thread has ended).
pub fn stat_fields(path: &Path) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name is in parentheses and may hold spaces: the state follows the last ')'.
    let after_name = stat.rsplit_once(')')?.1;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// A second kube-apiserver on this binary's etcd, with the first one's flags but a port of its own,
/// and the service account's kubeconfig for it. Killed when dropped.
pub struct SecondApiserver {
    child: Option<Child>,
    args: Vec<String>,
    pub sa_kubeconfig: std::path::PathBuf,
    pub admin_kubeconfig: std::path::PathBuf,
}

impl SecondApiserver {
    pub fn start() -> Self {
        let first = env().control_plane_pid("kube-apiserver");
        let cmdline = std::fs::read(format!("/proc/{first}/cmdline")).expect("its command line");
        let mut args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let port = free_port().port();
        let mut first_port = String::new();
        for arg in &mut args {
            if let Some(p) = arg.strip_prefix("--secure-port=") {
                first_port = p.to_owned();
                *arg = format!("--secure-port={port}");
            }
        }
        assert!(!first_port.is_empty(), "the apiserver's port: {args:?}");
        let pointed = |kubeconfig: &Path, name: &str| {
            let text = std::fs::read_to_string(kubeconfig).expect("the kubeconfig");
            let path = env().state_dir.join(name);
            std::fs::write(
                &path,
                text.replace(
                    &format!("127.0.0.1:{first_port}"),
                    &format!("127.0.0.1:{port}"),
                ),
            )
            .expect("writing the kubeconfig");
            path
        };
        let mut second = Self {
            child: None,
            args,
            sa_kubeconfig: pointed(&env().sa_kubeconfig, "kubeconfig-sa-second-apiserver"),
            admin_kubeconfig: pointed(&env().kubeconfig, "kubeconfig-second-apiserver"),
        };
        second.spawn();
        second
    }

    /// Starts the process (again, on the same port) and waits until it is ready.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(env().state_dir.join("second-apiserver.log"))
            .expect("its log file");
        let child = Command::new(&self.args[0])
            .args(&self.args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the second apiserver starts");
        self.child = Some(child);
        eventually("the second apiserver ready", WAIT_READY, || {
            kubectl_with(&self.sa_kubeconfig, &["get", "--raw", "/readyz"])
                .status
                .success()
                .then_some(())
        });
    }

    /// SIGKILL, as a crashed or evicted apiserver: its watch cache is gone with it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SecondApiserver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Lease's holder, or `None` when it cannot be read (or is empty).
pub fn lease_holder() -> Option<String> {
    let out = kubectl_line(
        "get lease scoped-secrets -n scoped-secrets-system -o jsonpath={.spec.holderIdentity}",
    );
    let holder = stdout(&out).trim().to_owned();
    (out.status.success() && !holder.is_empty()).then_some(holder)
}

/// A runtime for the test's own API calls (a client from a kubeconfig needs one).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// An admin client, made once.
pub fn admin() -> kube::Client {
    static CLIENT: OnceLock<kube::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            runtime()
                .block_on(client(&env().kubeconfig))
                .expect("an admin client")
        })
        .clone()
}
