//! Crash consistency of volume commits: a commit is stopped at a random device write or
//! flush (a sticky fault), the power is cut (unflushed writes kept, dropped or torn by
//! seed), and the reopened volume must hold exactly the last acknowledged commit -- or the
//! commit that was in flight, if its super reached the media -- and verify cleanly.
//!
//! `SCOUTFS_CRASH_SEEDS=N` runs more seeds; a failure prints the seed to replay with
//! `SCOUTFS_CRASH_SEED=S`.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_clean, env_num, env_or, PowerCut, Rng};
use scoutfs_core::btree;
use scoutfs_core::device::{BlockDevice, FaultDevice, FaultOp};
use scoutfs_core::format::Key;
use scoutfs_core::volume::{OpenOptions, Volume, VolumeError};
use std::collections::BTreeMap;
use std::sync::Arc;

type Model = BTreeMap<u64, Vec<u8>>;

fn key(i: u64) -> Key {
    Key::new(16, 1 << 20 | i, 1, 0, 0, 0)
}

fn contents(vol: &Volume) -> Model {
    let mut out = Model::new();
    vol.scan(&key(0), &key(u64::MAX >> 24), |it| {
        out.insert(it.key.first & !(1 << 20), it.val.to_vec());
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    out
}

fn run_seed(seed: u64) {
    let mut rng = Rng(seed);
    let power = PowerCut::volume(4 << 20, 1 << 20, 1024);
    let (meta, data) = (power.meta.clone(), power.data.clone());
    let (m, d) = power.raw();
    let fault = Arc::new(FaultDevice::new(meta.clone()));
    fault.sticky(true);
    let mut vol = Volume::open(
        fault.clone(),
        d.clone(),
        OpenOptions {
            cache_bytes: 1 << 20,
            seed,
        },
    )
    .unwrap();
    let mut acked = Model::new();
    let mut model = Model::new();
    // Arm the fault at a random write or flush within the next few commits.
    let op = if rng.below(3) == 0 {
        FaultOp::Flush
    } else {
        FaultOp::Write
    };
    fault.fail_nth(
        op,
        1 + rng.below(if op == FaultOp::Flush { 8 } else { 120 }),
    );
    let mut crashed = false;
    for _round in 0..12 {
        for _ in 0..rng.below(60) + 1 {
            let i = rng.below(300);
            if rng.below(4) == 0 {
                let _ = vol.delete(&key(i));
                model.remove(&i);
            } else {
                let v = vec![rng.next() as u8; rng.below(100) as usize];
                vol.put(&key(i), &v).unwrap();
                model.insert(i, v);
            }
        }
        match vol.commit() {
            Ok(_) => acked = model.clone(),
            Err(e) => {
                assert!(
                    matches!(e, VolumeError::Device(_) | VolumeError::Block(_)),
                    "{e}"
                );
                assert!(vol.is_poisoned());
                assert!(matches!(vol.put(&key(1), b"x"), Err(VolumeError::Poisoned)));
                crashed = true;
                break;
            }
        }
    }
    let inflight = model;
    meta.crash(seed.rotate_left(7));
    data.crash(seed);
    drop(vol);
    assert_clean(&m, &d, &format!("seed {seed}: check"));
    let vol = Volume::open(
        m,
        d,
        OpenOptions {
            cache_bytes: 1 << 20,
            seed: seed + 1,
        },
    )
    .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
    btree::verify(&**vol.cache(), &vol.root()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let got = contents(&vol);
    if crashed {
        assert!(
            got == acked || got == inflight,
            "seed {seed}: reopened state is neither the acknowledged nor the in-flight commit"
        );
    } else {
        assert_eq!(got, acked, "seed {seed}");
    }
}

#[test]
fn commits_survive_crashes_at_any_write_or_flush() {
    if let Some(seed) = env_num(&["SCOUTFS_CRASH_SEED"]) {
        run_seed(seed);
        return;
    }
    let n: u64 = env_or(&["SCOUTFS_CRASH_SEEDS"], 300);
    for seed in 0..n {
        let r = std::panic::catch_unwind(|| run_seed(seed));
        if r.is_err() {
            panic!("crash seed {seed} failed; replay with SCOUTFS_CRASH_SEED={seed}");
        }
    }
}

/// A super write that reached the media damaged (torn inside a sector, or garbage from a
/// failing device) leaves the previous commit readable from the other super slot.
#[test]
fn damaged_latest_super_falls_back_to_the_previous_commit() {
    use scoutfs_core::format::{SUPER_OFFSET, SUPER_SIZE, SUPER_SLOTS};
    for seed in 0..100u64 {
        let mut rng = Rng(seed);
        let power = PowerCut::volume(4 << 20, 1 << 20, 1024);
        let meta = power.meta.clone();
        let (m, d) = power.raw();
        let mut vol = Volume::open(m.clone(), d.clone(), OpenOptions::default()).unwrap();
        for n in 0..rng.below(4) + 1 {
            vol.put(&key(n), b"old").unwrap();
            vol.commit().unwrap();
        }
        let expect = contents(&vol);
        // The next commit's super goes to the slot of the next header seq.
        let slot = (vol.super_block().hdr.seq.get() + 1) % SUPER_SLOTS;
        vol.put(&key(99), b"new").unwrap();
        vol.commit().unwrap();
        drop(vol);
        // Damage some bytes of that super on the media.
        let off = SUPER_OFFSET + slot * SUPER_SIZE as u64 + rng.below(SUPER_SIZE as u64 - 64);
        meta.write_at(&[0xa5; 64], off).unwrap();
        meta.flush().unwrap();
        // The damaged slot is reported, and nothing else is wrong with the older commit.
        let r = scoutfs_core::check::check_blocks(&m, &d).unwrap();
        assert!(
            matches!(
                &r.problems[..],
                [scoutfs_core::check::Problem::SuperSlot(s)] if s.device == "meta" && s.slot == slot
            ),
            "seed {seed}: check: {:#?}",
            r.problems
        );
        let vol = Volume::open(m, d, OpenOptions::default())
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(contents(&vol), expect, "seed {seed}");
    }
}
