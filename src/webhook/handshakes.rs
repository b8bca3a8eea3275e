//! Connections still in their TLS handshake, at most so many at once: past that, the oldest is
//! closed to make room. A client that opens connections and never finishes a handshake (it needs
//! no certificate for that, nor to speak TLS at all) then holds at most this many of the
//! connection slots, from however many addresses, and never makes the apiserver's handshakes,
//! which take milliseconds, wait for a slot.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The handshakes under way, oldest first.
#[derive(Debug, Clone)]
pub struct Handshakes {
    pending: Arc<Mutex<Pending>>,
    max: usize,
}

#[derive(Debug, Default)]
struct Pending {
    next: u64,
    /// Each handshake's number and the sender that closes it.
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// A handshake's place among those under way, given up when dropped (the handshake ended).
#[derive(Debug)]
pub struct Turn {
    pending: Arc<Mutex<Pending>>,
    id: u64,
}

/// Resolves with `Ok(())` when the handshake is closed to make room for a newer one.
pub type Evicted = oneshot::Receiver<()>;

impl Handshakes {
    /// At most `max` handshakes at once (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            pending: Arc::default(),
            max: max.max(1),
        }
    }

    /// A new handshake's turn, closing the oldest under way when there are `max` already.
    pub fn begin(&self) -> (Turn, Evicted) {
        let (evict, evicted) = oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.queue.len() >= self.max {
            evict_oldest(&mut pending);
        }
        let id = pending.next;
        pending.next += 1;
        pending.queue.push_back((id, evict));
        let turn = Turn {
            pending: Arc::clone(&self.pending),
            id,
        };
        (turn, evicted)
    }
}

impl Handshakes {
    /// Closes the oldest handshake under way, if there is one: room for a new connection at the
    /// connection cap.
    pub fn evict_oldest(&self) -> bool {
        evict_oldest(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Closes the oldest handshake of `pending` that is still under way; whether there was one.
fn evict_oldest(pending: &mut Pending) -> bool {
    while let Some((_, oldest)) = pending.queue.pop_front() {
        // Its connection may have ended without giving its turn back yet: try the next.
        if oldest.send(()).is_ok() {
            return true;
        }
    }
    false
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = pending.queue.iter().position(|(id, _)| *id == self.id) {
            pending.queue.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_oldest_handshake_is_closed() {
        let handshakes = Handshakes::new(2);
        let (_a, mut a_evicted) = handshakes.begin();
        let (b, mut b_evicted) = handshakes.begin();
        assert!(a_evicted.try_recv().is_err(), "room for two");
        let (_c, mut c_evicted) = handshakes.begin();
        assert_eq!(a_evicted.try_recv(), Ok(()), "the oldest made room");
        assert!(b_evicted.try_recv().is_err());
        // A handshake that ended gives its place back: the next one evicts nobody.
        drop(b);
        let (_d, mut d_evicted) = handshakes.begin();
        assert!(c_evicted.try_recv().is_err());
        let (_e, _) = handshakes.begin();
        assert_eq!(c_evicted.try_recv(), Ok(()), "then the oldest again");
        assert!(d_evicted.try_recv().is_err());
    }
}
