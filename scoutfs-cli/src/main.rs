//! The `scoutfs` command.

fn main() {
    eprintln!("scoutfs: no subcommands yet");
    std::process::exit(2);
}
