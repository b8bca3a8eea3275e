//! Resident memory from `/proc/self/status` (no allocator hooks, so no `unsafe`): the peak
//! (`VmHWM`) is reset to the current size before each input by writing 5 to `/proc/self/clear_refs`,
//! so the peak after it is what that input needed at most.

use std::cell::Cell;

thread_local! {
    /// The highest peak seen before any reset, for the run's summary.
    static HIGHEST: Cell<u64> = const { Cell::new(0) };
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The peak resident size since the last reset (KiB).
pub fn peak_since_reset_kib() -> u64 {
    let peak = status_kib("VmHWM:");
    HIGHEST.with(|h| h.set(h.get().max(peak)));
    peak
}

/// The peak resident size of the whole run (KiB), across resets.
pub fn highest_kib() -> u64 {
    peak_since_reset_kib();
    HIGHEST.with(Cell::get)
}

/// Resets the peak to the current resident size and returns that size (KiB).
pub fn reset_peak() -> u64 {
    peak_since_reset_kib();
    // Unsupported kernels leave the peak monotonic: the bound then only gets stricter.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:")
}
