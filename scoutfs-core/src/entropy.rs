//! Randomness from outside the core: mount ids, block seq seeds and the like come from an
//! [`Entropy`] the embedder gives, so that a simulation replays a whole cluster from one
//! seed ([`SeededEntropy`]) while a real mount draws from the system ([`SystemEntropy`]).

use parking_lot::Mutex;

/// A source of random numbers.
pub trait Entropy: Send + Sync + std::fmt::Debug {
    /// The next random number.
    fn next_u64(&self) -> u64;
}

/// Numbers from the standard library's per-process random hash keys (drawn from the
/// operating system once per process) mixed with a counter: unpredictable across
/// processes, distinct within one, no I/O of the core's own.
#[derive(Debug, Default)]
pub struct SystemEntropy {
    count: std::sync::atomic::AtomicU64,
}

impl Entropy for SystemEntropy {
    fn next_u64(&self) -> u64 {
        use std::hash::{BuildHasher, RandomState};
        let n = self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RandomState::new().hash_one((n, std::process::id()))
    }
}

/// A replayable sequence from a seed (splitmix64).
#[derive(Debug)]
pub struct SeededEntropy {
    state: Mutex<u64>,
}

impl SeededEntropy {
    /// The sequence of `seed`.
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy {
            state: Mutex::new(seed),
        }
    }
}

impl Entropy for SeededEntropy {
    fn next_u64(&self) -> u64 {
        crate::block::splitmix64(&mut self.state.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_replays_and_system_differs() {
        let a: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SeededEntropy::new(7), |e, _| Some(e.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SeededEntropy::new(7), |e, _| Some(e.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        let s = SystemEntropy::default();
        assert_ne!(s.next_u64(), s.next_u64());
    }
}
