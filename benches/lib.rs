//! Benchmarks of scoutfs-rs against named peers; see `BENCHMARKS.md`.
