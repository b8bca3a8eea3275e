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

/// The niceness of a thread decoding a large body: it takes the CPU only when ordinary reviews
/// leave it (a nice-10 thread weighs about a tenth of a normal one), so a client posting 7 MiB
/// bodies back to back slows itself, not the apiserver's reviews.
const LARGE_BODY_NICENESS: i32 = 10;

/// Lowers the calling thread's priority to [`LARGE_BODY_NICENESS`], once per thread. For the
/// blocking threads that decode large bodies (nothing else runs on the webhook runtime's blocking
/// pool). Lowering needs no privilege; where it fails, the thread keeps its priority.
pub fn yield_to_small_reviews() {
    thread_local! {
        static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if LOWERED.get() {
        return;
    }
    LOWERED.set(true);
    let thread = Some(rustix::thread::gettid());
    // Never raised: a process started nicer than this stays as nice.
    let lowered = rustix::process::getpriority_process(thread).and_then(|current| {
        if current >= LARGE_BODY_NICENESS {
            return Ok(());
        }
        rustix::process::setpriority_process(thread, LARGE_BODY_NICENESS)
    });
    if let Err(e) = lowered {
        tracing::debug!(error = %e, "could not lower the priority of a large-body decoding thread");
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

    #[test]
    fn a_large_body_thread_yields_to_the_reviews_and_only_it() {
        let priority = || rustix::process::getpriority_process(None).expect("priority");
        let ours = priority();
        let (before, after) = std::thread::spawn(move || {
            let before = priority();
            yield_to_small_reviews();
            yield_to_small_reviews();
            (before, priority())
        })
        .join()
        .expect("thread");
        assert_eq!(before, ours);
        // Lowered to LARGE_BODY_NICENESS; a thread already nicer stays as it was.
        assert_eq!(after, LARGE_BODY_NICENESS.max(before));
        assert_eq!(priority(), ours, "the calling thread alone is lowered");
    }
}
