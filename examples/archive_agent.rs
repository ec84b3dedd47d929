//! The reference archive agent (module `agent` of this crate has the how and why): one
//! archive pass over a volume's image files — every regular file whose contents changed
//! since the last pass is copied to the archive folder with its SHA-256 and released —
//! or the staging of released files back from their copies.
//!
//! ```sh
//! cargo run --release --example archive_agent -- [OPTIONS] DIR
//! ```
//!
//! DIR holds the volume (`meta.img` and `data.img`, as `scripts/mount-demo` makes it in
//! `./scoutfs-mount`); it must not be mounted. The archive defaults to `DIR/archive`, the
//! position of the last pass to `DIR/agent.state`.
//!
//! Options: `--archive PATH`, `--state PATH`, `--stage INO` (stage that inode back;
//! repeatable), `--stage-waiting` (stage every file a reader or writer waits on in this
//! process: an embedder serving a mount from the same `Fs` calls it), `--json` (print
//! one JSON summary instead of text), `--quiet` (no progress bar).

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::fs::{Fs, FsOptions};
use scoutfs_examples::agent::{self, Position, Summary};
use std::error::Error;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Archive changed files of a scoutfs volume and release them, or stage them back")]
struct Args {
    /// The folder of the volume's meta.img and data.img.
    dir: PathBuf,
    /// The archive folder (default DIR/archive).
    #[arg(long)]
    archive: Option<PathBuf>,
    /// The state file keeping the position of the last pass (default DIR/agent.state).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Stage this inode back instead of archiving (repeatable).
    #[arg(long = "stage", value_name = "INO")]
    stage: Vec<u64>,
    /// Stage back every file that has a waiting reader or writer.
    #[arg(long)]
    stage_waiting: bool,
    /// Print one JSON summary.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archive_agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let archive = args
        .archive
        .clone()
        .unwrap_or_else(|| args.dir.join("archive"));
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| args.dir.join("agent.state"));
    std::fs::create_dir_all(&archive)?;
    let meta: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(args.dir.join("meta.img"))?);
    let data: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(args.dir.join("data.img"))?);
    let fs = Fs::mount_single(meta, data, FsOptions::default())?;
    let t = Instant::now();
    let mut sum = Summary::default();
    let staging = !args.stage.is_empty() || args.stage_waiting;
    let res = if staging {
        stage(&fs, args, &archive, &mut sum)
    } else {
        pass(&fs, args, &archive, &state, &mut sum)
    };
    // Whatever happened, what was done is committed.
    fs.unmount()?;
    res?;
    let secs = t.elapsed().as_secs_f64();
    if args.json {
        let doc = serde_json::json!({ "summary": sum, "seconds": secs });
        println!("{doc}");
    } else if staging {
        println!(
            "staged {} files ({} bytes) ({secs:.2} s)",
            sum.staged, sum.staged_bytes
        );
    } else {
        println!(
            "looked at {} changed, archived {} files ({} bytes), released {}, {} changed \
             meanwhile, {} skipped; next pass from data_seq {} ino {} ({secs:.2} s)",
            sum.changed,
            sum.archived,
            sum.archived_bytes,
            sum.released,
            sum.changed_meanwhile,
            sum.skipped,
            sum.position.seq,
            sum.position.ino
        );
    }
    Ok(())
}

fn pass(
    fs: &Fs,
    args: &Args,
    archive: &std::path::Path,
    state: &std::path::Path,
    sum: &mut Summary,
) -> Result<(), Box<dyn Error>> {
    let mut pos = Position::load(state)?;
    let bar = if args.quiet || args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(ProgressStyle::with_template(
            "{spinner} data_seq {pos}/{len} {msg} [{elapsed_precise}]",
        )?);
        b
    };
    let start = pos.seq;
    *sum = agent::archive_pass(fs, archive, &mut pos, &mut |s| {
        bar.set_length(s.horizon.saturating_sub(start));
        bar.set_position(s.seq.saturating_sub(start));
        bar.set_message(format!("{} files", s.done));
    })?;
    bar.finish_and_clear();
    pos.save(state)?;
    Ok(())
}

fn stage(
    fs: &Fs,
    args: &Args,
    archive: &std::path::Path,
    sum: &mut Summary,
) -> Result<(), Box<dyn Error>> {
    for &ino in &args.stage {
        let bytes = agent::stage_file(fs, archive, ino)?;
        sum.staged += 1;
        sum.staged_bytes += bytes;
    }
    if args.stage_waiting {
        let (files, bytes) = agent::stage_waiting(fs, archive)?;
        sum.staged += files;
        sum.staged_bytes += bytes;
    }
    Ok(())
}
