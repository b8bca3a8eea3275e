//! The webhook's own threads. Reviews are answered on a tokio runtime of their own, apart from the
//! watches and the reconciler: a re-list decodes thousands of objects and a round plans the whole
//! world in long polls, and on a shared runtime every review that arrives meanwhile queues behind
//! them. On threads of its own a review waits only for the kernel's scheduler, which runs a thread
//! that has just woken promptly.

use std::io;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// Threads' names, as `top -H` and profiles show them.
const THREAD_NAME: &str = "webhook";

/// A runtime on threads of its own. Futures are spawned with [`Self::handle`]; the runtime (and
/// every task still on it) ends when this is dropped.
pub struct ReviewRuntime {
    handle: Handle,
    // Dropping the sender ends the thread that owns the runtime, which drops it there (a runtime
    // cannot be dropped from async code).
    _keep: oneshot::Sender<()>,
}

impl ReviewRuntime {
    /// Starts `threads` worker threads (at least one).
    pub fn start(threads: usize) -> io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (keep, dropped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("{THREAD_NAME}-owner"))
            .spawn(move || {
                runtime.block_on(async {
                    let _ = dropped.await;
                });
            })?;
        Ok(Self {
            handle,
            _keep: keep,
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Worker threads for reviews: one per core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn futures_run_on_the_webhooks_threads_and_end_with_it() {
        let runtime = ReviewRuntime::start(1).expect("runtime");
        let name = runtime
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("ran");
        assert_eq!(name.as_deref(), Some(THREAD_NAME));

        let pending = runtime.handle().spawn(std::future::pending::<()>());
        drop(runtime);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), pending)
            .await
            .expect("the task ends with its runtime");
        assert!(ended.is_err_and(|e| e.is_cancelled()));
    }
}
