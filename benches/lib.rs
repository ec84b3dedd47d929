//! Benchmarks of scoutfs-rs against named peers; see `BENCHMARKS.md`.

pub mod memfs;

/// Running the programs the comparison programs compare against.
pub mod cmd {
    use std::process::Command;

    /// Run `cmd` with `args`; its trimmed stdout, or an error with its stderr.
    pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(cmd)
            .args(args)
            .output()
            .map_err(|e| format!("{cmd}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{cmd} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Write back everything dirty and empty the kernel's page, dentry and inode caches.
    pub fn drop_caches() -> Result<(), String> {
        run("sync", &[])?;
        std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("drop_caches: {e}"))
    }
}

/// Order statistics of measured samples.
pub mod stats {
    /// The `q` quantile (0 to 1) of `v` by nearest rank; 0 for no samples.
    pub fn quantile(v: &[f64], q: f64) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
        v.get(rank.saturating_sub(1)).copied().unwrap_or(0.0)
    }

    /// The median of `v` (the lower of the two middle samples); 0 for no samples.
    pub fn median(v: &[f64]) -> f64 {
        quantile(v, 0.5)
    }
}
