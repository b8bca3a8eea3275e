//! Open connections counted by the address they come from, so that one client cannot take every
//! slot of a listener: the apiserver's (the webhook port) or the kubelet's probes' (the admin port);
//! and, weighed in bytes, the large bodies' budget (`limits.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The connections each address holds, up to a cap per address.
#[derive(Debug, Clone)]
pub struct PeerSlots {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_address: usize,
}

/// One open connection of an address (or the slots one body holds), counted until dropped.
#[derive(Debug)]
pub struct PeerSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
    count: usize,
}

impl PeerSlots {
    /// At most `per_address` connections from one address (at least 1).
    pub fn new(per_address: usize) -> Self {
        Self {
            open: Arc::default(),
            per_address: per_address.max(1),
        }
    }

    /// A slot for `ip`, unless it holds its share already. An IPv4 address seen through an IPv6
    /// listener counts as itself.
    pub fn take(&self, ip: IpAddr) -> Option<PeerSlot> {
        self.take_many(ip, 1)
    }

    /// `count` slots for `ip` at once (a weight, such as a body's bytes), unless they would take it
    /// past its share.
    pub fn take_many(&self, ip: IpAddr, count: usize) -> Option<PeerSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let held = open.entry(ip).or_default();
        if held.saturating_add(count) > self.per_address {
            if *held == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *held += count;
        Some(PeerSlot {
            open: Arc::clone(&self.open),
            ip,
            count,
        })
    }

    /// A slot for `ip`, unless it holds its fair share of `capacity` already: the capacity over
    /// the addresses holding slots, itself included (at least one). An address alone may take
    /// them all; with others, each keeps room for the rest.
    pub fn take_fair(&self, ip: IpAddr, capacity: usize) -> Result<PeerSlot, usize> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let holders = open.len() + usize::from(!open.contains_key(&ip));
        let fair = (capacity / holders).max(1);
        let held = open.entry(ip).or_default();
        if *held >= fair {
            if *held == 0 {
                open.remove(&ip);
            }
            return Err(fair);
        }
        *held += 1;
        Ok(PeerSlot {
            open: Arc::clone(&self.open),
            ip,
            count: 1,
        })
    }

    /// How many slots `ip` holds now.
    pub fn held(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// How many addresses hold slots now.
    pub fn holders(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The most one address may hold.
    pub fn per_address(&self) -> usize {
        self.per_address
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = open.get_mut(&self.ip) {
            *held = held.saturating_sub(self.count);
            if *held == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The addresses holding the most of `addresses` (each listed once per connection): the ones a
/// full pool makes room from first, so that one client's flood never pushes the apiserver out.
pub fn busiest(addresses: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut held: HashMap<IpAddr, usize> = HashMap::new();
    for address in addresses {
        *held.entry(address).or_default() += 1;
    }
    let most = held.values().copied().max().unwrap_or(0);
    held.into_iter()
        .filter(|(_, n)| *n == most)
        .map(|(address, _)| address)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_holds_its_share_and_gets_it_back() {
        let slots = PeerSlots::new(2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let first = slots.take(a).expect("first");
        let _second = slots.take(mapped).expect("second, the same address");
        assert_eq!(slots.held(mapped), 2);
        assert!(slots.take(a).is_none(), "a third from the same address");
        assert!(slots.take("10.0.0.2".parse().expect("ip")).is_some());
        drop(first);
        assert!(slots.take(a).is_some(), "a freed slot is reusable");
    }

    #[test]
    fn an_address_alone_takes_all_and_with_others_its_fair_share() {
        let slots = PeerSlots::new(usize::MAX);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let mut held: Vec<_> = (0..4)
            .map(|_| slots.take_fair(a, 4).expect("alone"))
            .collect();
        assert_eq!(slots.take_fair(a, 4).err(), Some(4));
        // Another address may take its share of 2; the first, over its share now, none.
        held.pop();
        held.pop();
        held.push(slots.take_fair(b, 4).expect("b's share"));
        assert_eq!(slots.take_fair(a, 4).err(), Some(2));
        held.push(slots.take_fair(b, 4).expect("b's share"));
        assert_eq!(slots.take_fair(b, 4).err(), Some(2));
    }
}
