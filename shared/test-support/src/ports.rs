//! Ports for servers a test starts (NATS, a suite's HTTP listeners).
//!
//! Asking the kernel for port 0 and closing the socket hands out a port from the *ephemeral*
//! range, the same range every outgoing connection takes its local port from. Between the test
//! choosing the port and the server binding it, one of the many client connections a suite
//! opens (to NATS, to PostgreSQL, between services) can take that port, and the server then
//! fails to start. Restart tests reopen the same port later, which widens that window to
//! seconds. So the ports here come from below the ephemeral range, where no outgoing
//! connection ever lands, and one process never hands out the same port twice.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

use rand::Rng as _;

/// The lowest port handed out: above the well-known and the usual registered service ports.
const LOWEST: u16 = 20_000;

/// The first port of the kernel's ephemeral range (Linux's default when unreadable).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback TCP port that is free now, outside the ephemeral range, and not handed out
/// before by this process.
///
/// # Panics
/// When no such port can be found in a thousand tries (a machine whose ephemeral range starts
/// too low, or one that is out of ports).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let end = ephemeral_start();
    assert!(end > LOWEST + 1_000, "the ephemeral port range starts at {end}: too low to keep test servers out of it");
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let mut random = rand::rng();
    for _ in 0..1_000 {
        let port = random.random_range(LOWEST..end);
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port between {LOWEST} and {end} after 1,000 tries");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bindable_outside_the_ephemeral_range_and_never_repeat() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            assert!((LOWEST..ephemeral_start()).contains(&port), "{port}");
        }
        let port = free_port();
        TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }
}
