//! ruroco-commander, the root executor: accepts 24-byte frames from the server's uid only and
//! runs the configured command they name. The modules, in the order a frame meets them:
//! `listener` (connections, SO_PEERCRED) with `codec` (24-byte frames), `dispatch` (the decision and the
//! table of running commands), `schedule` (grants, pure) and `store` (grant records on disk),
//! `exec` (`sh -c`, run-as, timeouts); around them `cli`, `daemon` (start-up, loop, drain),
//! `config`, `reload`, `control`, `socket`, `quiet`, `error` and `manual`.
//! It must never open a network socket, parse anything but 24-byte frames, or run shell text
//! that did not come from its root-owned config.
#![forbid(unsafe_code)]

mod cli;
// The fuzz targets cut frames with the codec and parse configs (feature `internal-api`), and so
// do the docs' tests; a release build keeps both private.
#[cfg(feature = "internal-api")]
pub mod codec;
#[cfg(not(feature = "internal-api"))]
mod codec;
#[cfg(feature = "internal-api")]
pub mod config;
#[cfg(not(feature = "internal-api"))]
mod config;
mod control;
mod daemon;
mod dispatch;
mod error;
mod exec;
mod listener;
pub mod manual;
mod quiet;
mod reload;
mod schedule;
mod socket;
mod store;

use ruroco_kit::exit::{self, ExitStatus};

/// The clap definition of `ruroco-commander` (for its man page and shell completions).
pub fn cli() -> clap::Command {
    cli::command()
}

/// Run `ruroco-commander` with the process's arguments: the daemon until SIGTERM/SIGINT,
/// `--check`, or an operator command (`grants`, `revoke`, `reload`). Returns the exit status,
/// a sysexits(3) code from `ruroco_kit::exit` (the table in ruroco-commander(8), EXIT STATUS).
/// A failure is printed as one line on stderr (`--check` adds the config line and a caret).
pub fn run() -> u8 {
    // A command with `user` re-executes this binary to drop to that user (see exec.rs).
    exec::run_as_if_asked();
    match cli::main() {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("ruroco-commander: {e}");
            e.exit_code()
        }
    }
}
