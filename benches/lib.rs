//! Benchmarks of scoutfs-rs against named peers; see `BENCHMARKS.md`.

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
