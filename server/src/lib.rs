//! ruroco-server: receives 94-byte datagrams, judges them with the protocol core's gate,
//! persists the replay floors (on a writer thread, off the receive loop) and forwards 24-byte
//! frames to the root commander only once their floor is on disk. `run()` dispatches the
//! command line; `startup.rs` tells the start-up order, `run.rs` the loop. It must never run
//! a command, read the commands file, or answer on UDP.
//!
//! The modules are private; the `internal-api` feature makes the ones the fuzz targets, the
//! benchmark and the end-to-end tests reach public. It is not a stable interface.
#![forbid(unsafe_code)]

/// Declares each module public with the `internal-api` feature, private without.
macro_rules! internal {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[cfg(feature = "internal-api")]
        pub mod $name;
        #[cfg(not(feature = "internal-api"))]
        mod $name;
    )*};
}

internal!(
    /// Taking the UDP socket (socket activation or bind).
    activation,
    /// The link to the root commander.
    commander_link,
    /// `server.toml`.
    config,
    /// Batched datagram receive.
    receive,
    /// The replay floors' state file.
    replay,
);
pub mod cli;
mod error;
mod genkey;
mod keys;
pub mod manual;
mod privileges;
mod reload;
mod run;
mod sandbox;
mod startup;
mod status;
mod ticker;
mod writer;

use ruroco_kit::exit::{self, ExitStatus};

/// The whole `ruroco-server` process: parse the command line, then run the operator command
/// it names or start the server. Returns the exit status (sysexits(3), ruroco-server(8)).
pub fn run() -> u8 {
    let args = match cli::Args::parse_or_exit_code() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match args.action() {
        cli::Action::GenKey { path, group } => cli::gen_key(&path, &group),
        cli::Action::Check => cli::check(&args.config),
        cli::Action::Reload(pid) => cli::reload(&args.config, pid),
        cli::Action::Serve => {
            // First, before anything is opened (the journald socket of the logger included):
            // nothing the parent left open stays (a second UDP socket would escape the
            // seccomp pin on the one the server receives on).
            let closed = ruroco_kit::fds::close_inherited();
            ruroco_kit::logging::init("ruroco-server");
            match startup::serve(&args.config, closed) {
                Ok(()) => exit::OK,
                Err(e) => {
                    tracing::error!(event = "failed", "{e}");
                    e.exit_code()
                }
            }
        }
    }
}
