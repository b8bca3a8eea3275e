//! The control plane's processes: each logs to a file in the state directory, is stopped in reverse
//! order of start, and has a watchdog that stops it if the process that started it dies first.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STOP_GRACE: Duration = Duration::from_secs(10);

/// A process of the control plane, and the watchdog that stops it if the owner process dies first.
pub(super) struct Process {
    pub(super) name: &'static str,
    pub(super) child: Child,
    watchdog: Child,
}

#[derive(Default)]
pub(super) struct Children(pub(super) Vec<Process>);

/// Waits for the owner (`$1`) to be gone, then stops the child (`$2`) as [`Children::stop_all`]
/// would: SIGTERM, and SIGKILL after the grace period. A process of its own because nothing of the
/// owner survives the owner: a test binary keeps its control plane in a static that is never
/// dropped, and may be killed.
const WATCHDOG: &str = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
kill -TERM "$2" 2>/dev/null || exit 0
i=0
while kill -0 "$2" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
kill -KILL "$2" 2>/dev/null
exit 0"#;

impl Children {
    pub(super) fn start(
        &mut self,
        name: &'static str,
        command: &mut Command,
        dir: &Path,
    ) -> Result<()> {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "control-plane-watchdog"])
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn();
        match watchdog {
            Ok(watchdog) => {
                self.0.push(Process {
                    name,
                    child,
                    watchdog,
                });
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e).with_context(|| format!("starting the watchdog of {name}"))
            }
        }
    }

    pub(super) fn exited(&mut self) -> Option<&'static str> {
        self.0
            .iter_mut()
            .find_map(|p| (!matches!(p.child.try_wait(), Ok(None))).then_some(p.name))
    }

    /// In reverse order of start (the product, the controller manager, the apiserver, then etcd):
    /// SIGTERM first, so the product drains and releases its lease, then SIGKILL for whatever is
    /// still there after a grace period. The watchdogs go first, so none signals a reused pid.
    pub(super) fn stop_all(&mut self) {
        for process in self.0.iter_mut().rev() {
            let _ = process.watchdog.kill();
            let _ = process.watchdog.wait();
            let child = &mut process.child;
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + STOP_GRACE;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::park_timeout(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}
