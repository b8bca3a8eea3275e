//! The webhook's own threads. Reviews are answered on a tokio runtime of their own, apart from the
//! watches and the reconciler: a re-list decodes thousands of objects and a round plans the whole
//! world in long polls, and on a shared runtime every review that arrives meanwhile queues behind
//! them. On threads of its own a review waits only for the kernel's scheduler; the other runtime's
//! threads run a little nicer (see [`background`]), so the scheduler picks a review's thread first
//! when the cores are busy.

use std::io;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

/// Threads' names, as `top -H` and profiles show them.
const THREAD_NAME: &str = "webhook";
/// The other runtime's threads' name.
pub const BACKGROUND_THREAD_NAME: &str = "background";

/// The niceness of the watches' and the reconciler's threads. A review is on the apiserver's
/// request path (the user's `kubectl` waits for it); a copy is eventually consistent. At nice 5 a
/// thread weighs about a third of a normal one: it still gets a share of a busy core (a Lease is
/// renewed, the index kept current, even while reviews saturate the webhook), but a review's thread
/// that wakes is run before it.
pub const BACKGROUND_NICENESS: i32 = 5;

/// The runtime for everything but reviews (`serve`'s watches, reconciler, admin port and API
/// clients), its threads lowered to [`BACKGROUND_NICENESS`]. Build it on a thread left at its
/// priority and start the [`ReviewRuntime`] from there (the future given to `block_on` runs on
/// the calling thread): a thread inherits the niceness of the thread that starts it, and an
/// unprivileged process cannot raise it back.
pub fn background() -> io::Result<Runtime> {
    Builder::new_multi_thread()
        .enable_all()
        .thread_name(BACKGROUND_THREAD_NAME)
        .on_thread_start(|| lower_this_thread(BACKGROUND_NICENESS))
        .build()
}

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
/// pool).
pub fn yield_to_small_reviews() {
    thread_local! {
        static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if LOWERED.get() {
        return;
    }
    LOWERED.set(true);
    lower_this_thread(LARGE_BODY_NICENESS);
}

/// Sets the calling thread's niceness to `niceness` unless it is already that nice (never raised:
/// a process started nicer stays as nice). Lowering needs no privilege; where it fails, the thread
/// keeps its priority.
fn lower_this_thread(niceness: i32) {
    let thread = Some(rustix::thread::gettid());
    let lowered = rustix::process::getpriority_process(thread).and_then(|current| {
        if current >= niceness {
            return Ok(());
        }
        rustix::process::setpriority_process(thread, niceness)
    });
    if let Err(e) = lowered {
        tracing::debug!(error = %e, niceness, "could not lower a thread's priority");
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

    #[test]
    fn the_background_runtimes_threads_are_nicer_and_the_caller_is_not() {
        let priority = || rustix::process::getpriority_process(None).expect("priority");
        let ours = priority();
        let runtime = background().expect("runtime");
        let (name, theirs) = runtime.block_on(async move {
            tokio::spawn(
                async move { (std::thread::current().name().map(str::to_owned), priority()) },
            )
            .await
            .expect("ran")
        });
        assert_eq!(name.as_deref(), Some(BACKGROUND_THREAD_NAME));
        assert_eq!(theirs, BACKGROUND_NICENESS.max(ours));
        assert_eq!(
            priority(),
            ours,
            "the thread that built it keeps its priority"
        );
    }
}
