//! Waiting with a deadline instead of sleeping, and names no other test of this process uses.

use crate::env::env;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A unique name for this test process.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it returns `Some` or the deadline passes.
#[track_caller]
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Waits until the server's index has seen `condition` (the webhook reads the index, so a test that
/// just created an object waits for it to be indexed before asserting a decision that depends on it).
#[track_caller]
pub fn indexed(what: &str, condition: impl Fn(&scoped_secrets::world::World) -> bool) {
    eventually(what, Duration::from_secs(20), || {
        condition(&env().index.read()).then_some(())
    });
}
