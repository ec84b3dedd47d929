//! Shared support of the integration tests, so that no helper exists twice: a seeded RNG
//! and the environment's knobs (here), volumes on memory devices and the `check` every
//! test ends with (`volume`), crash devices (`crash`), a rig of a server and mounts on
//! one volume (`rig`), a model of what mounts committed (`model`), the workload and invariants of the lock
//! simulations (`lock_work`), mounts sharing a counter under a
//! cluster lock (`counter`), and numbered files
//! written through one mount and read back through another (`files`).
//!
//! Each test binary uses part of it.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity
)]

pub mod counter;
pub mod crash;
pub mod files;
pub mod lock_work;
pub mod locks;
pub mod model;
pub mod record;
pub mod rig;
pub mod volume;

pub use counter::*;
pub use crash::*;
pub use files::*;
pub use locks::*;
pub use model::*;
pub use rig::*;
pub use volume::*;

/// A seeded RNG (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        scoutfs_core::block::splitmix64(&mut self.0)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The first of the environment variables `names` that is set and parses, as a number of
/// seeds, cases or a seed to replay.
pub fn env_num<T: std::str::FromStr>(names: &[&str]) -> Option<T> {
    names
        .iter()
        .find_map(|v| std::env::var(v).ok().and_then(|s| s.parse().ok()))
}

/// `len` bytes that differ from offset to offset and from seed to seed (file contents
/// whose every block can be told apart).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| (scoutfs_core::block::splitmix64(&mut s) >> 24) as u8)
        .collect()
}

/// [`env_num`], or `default` when none is set.
pub fn env_or<T: std::str::FromStr>(names: &[&str], default: T) -> T {
    env_num(names).unwrap_or(default)
}

/// The number of cases a property test runs: `PROPTEST_CASES` or `SCOUTFS_PROPTEST_CASES`
/// when set, else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    env_or(&["PROPTEST_CASES", "SCOUTFS_PROPTEST_CASES"], default)
}

/// Run `run` on each seed of `first..first + seeds`; a seed that panics is named with
/// the environment variable that replays it (`replay_var=SEED`) before the panic goes on.
pub fn for_each_seed(first: u64, seeds: u64, replay_var: &str, mut run: impl FnMut(u64)) {
    for seed in first..first + seeds {
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed)));
        if let Err(e) = res {
            eprintln!("seed {seed} failed; replay with {replay_var}={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
