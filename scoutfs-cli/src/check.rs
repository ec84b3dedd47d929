//! `scoutfs check` and `scoutfs df`: offline reports on a volume's consistency and space.

use crate::error::CmdError;
use scoutfs_core::check::{self, Progress};
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::format::{SuperBlock, SUPER_FLAG_IS_META_BDEV};
use scoutfs_core::volume::{self, VolumeError};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

/// A progress bar is drawn for volumes with at least this many metadata blocks in use.
const PROGRESS_MIN_BLOCKS: u64 = 1 << 16;

fn open(path: &Path) -> Result<Arc<dyn BlockDevice>, CmdError> {
    let dev = FileDevice::open_read_only(path).map_err(|err| CmdError::Device {
        path: path.into(),
        action: "open",
        err,
    })?;
    Ok(Arc::new(dev))
}

/// Check the volume: problems one per line, then a summary. Problems found are
/// [`CmdError::Problems`].
pub fn run_check(meta: &Path, data: &Path, out: &mut dyn Write) -> Result<(), CmdError> {
    // A mounted volume changes under the walk; wait for an unmount to finish committing.
    // A data device another volume's mount holds is named as claimed twice.
    let _at_rest = crate::mount::lock_at_rest(meta, data)?;
    let (m, d) = (open(meta)?, open(data)?);
    let mut err = std::io::stderr();
    let bar = err.is_terminal();
    let mut drawn = false;
    let mut progress = |p: Progress| {
        if bar && p.blocks_expected >= PROGRESS_MIN_BLOCKS {
            let pct = (p.blocks_read * 100 / p.blocks_expected.max(1)).min(100);
            let _ = write!(
                err,
                "\rchecking: {} of ~{} metadata blocks ({pct}%)",
                p.blocks_read, p.blocks_expected
            );
            drawn = true;
        }
    };
    let r = check::check_with_progress(&m, &d, &mut progress)
        .map_err(|e| other_volume(&m, &d, meta, data, e))?;
    if drawn {
        let _ = writeln!(std::io::stderr());
    }
    for p in &r.problems {
        writeln!(out, "{p}")?;
    }
    if r.problem_count > r.problems.len() as u64 {
        writeln!(
            out,
            "... and {} more problems",
            r.problem_count - r.problems.len() as u64
        )?;
    }
    writeln!(
        out,
        "metadata blocks: {} referenced, {} free, {} total; data blocks: {} referenced, {} free, {} total; {} blocks read; {}; {}",
        r.meta.referenced,
        r.meta.free,
        r.meta.total,
        r.data.referenced,
        r.data.free,
        r.data.total,
        r.blocks_read,
        if r.namespace_checked {
            format!("{} inodes", r.inodes)
        } else {
            "namespace not checked (damaged item trees)".into()
        },
        problems(r.problem_count)
    )?;
    if r.is_clean() {
        Ok(())
    } else {
        Err(CmdError::Problems(r.problem_count))
    }
}

/// A volume error, or, when the devices' supers name two volumes, what each belongs to:
/// the data device was made for (or claimed by) another volume.
fn other_volume(
    m: &Arc<dyn BlockDevice>,
    d: &Arc<dyn BlockDevice>,
    meta: &Path,
    data: &Path,
    e: VolumeError,
) -> CmdError {
    if !matches!(e, VolumeError::Mismatch(_)) {
        return e.into();
    }
    let (Ok(ms), Ok(ds)) = (
        volume::read_super(&**m, "meta"),
        volume::read_super(&**d, "data"),
    ) else {
        return e.into();
    };
    let is_meta = |sb: &SuperBlock| sb.flags.get() & SUPER_FLAG_IS_META_BDEV != 0;
    // Devices swapped, or the same volume: the core's own words say it.
    if !is_meta(&ms) || is_meta(&ds) || ms.uuid == ds.uuid {
        return e.into();
    }
    let id = |sb: &SuperBlock| {
        format!(
            "fsid {:016x} uuid {}",
            sb.hdr.fsid.get(),
            sb.uuid
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    CmdError::Other(format!(
        "the devices belong to two volumes: {} is volume {}, and {} holds the super of \
         volume {}",
        meta.display(),
        id(&ms),
        data.display(),
        id(&ds)
    ))
}

/// `N problems`, or `1 problem`.
pub fn problems(n: u64) -> String {
    if n == 1 {
        "1 problem".into()
    } else {
        format!("{n} problems")
    }
}

/// Sizes as the original's `df -h` prints them: 1024-based, one decimal below 10.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "K", "M", "G", "T", "P", "E"];
    let mut v = bytes as f64;
    let mut u = 0;
    // Up a unit whenever the number would print as 1024 or more: 1.0T, not 1024G.
    while v >= 1023.5 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else if v < 9.95 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}

/// Print the original's table: `Type Size Total Used Free Use%`.
pub fn run_df(
    meta: &Path,
    data: &Path,
    human_sizes: bool,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    let (m, d) = (open(meta)?, open(data)?);
    let r = check::df(&m, &d)?;
    writeln!(
        out,
        "{:<8} {:>6} {:>12} {:>12} {:>12} {:>5}",
        "Type", "Size", "Total", "Used", "Free", "Use%"
    )?;
    for (name, bs, total, free) in [
        ("MetaData", r.meta_block_size, r.meta_total, r.meta_free),
        ("Data", r.data_block_size, r.data_total, r.data_free),
    ] {
        let used = total.saturating_sub(free);
        let pct = (used * 100).div_ceil(total.max(1));
        let (t, u, f) = if human_sizes {
            (human(total * bs), human(used * bs), human(free * bs))
        } else {
            (total.to_string(), used.to_string(), free.to_string())
        };
        writeln!(
            out,
            "{:<8} {:>6} {:>12} {:>12} {:>12} {:>5}",
            name,
            format!("{}KB", bs / 1024),
            t,
            u,
            f,
            format!("{pct}%")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512B");
        assert_eq!(human(1536), "1.5K");
        assert_eq!(human(64 << 20), "64M");
        assert_eq!(human(3 << 30), "3.0G");
        // Just under a unit rounds up into it, not to 1024 of the unit below.
        assert_eq!(human((1 << 40) - (1 << 28)), "1.0T");
        assert_eq!(human(1023), "1023B");
        assert_eq!(human(10 * 1024 - 10), "10K");
        assert_eq!(human(u64::MAX), "16E");
    }
}
