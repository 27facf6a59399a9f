//! Everything that stops the server, each mapped to its sysexits(3) status
//! (ruroco-server(8), EXIT STATUS). It must never carry key material: errors name files,
//! fields and key ids only.

use ruroco_kit::config_error::ConfigError;
use ruroco_kit::exit::{self, ExitStatus};

use crate::{activation, keys, privileges, replay, sandbox};

/// Everything that stops the server at start (or `--check`), each with its exit status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerError {
    /// `server.toml` cannot be read or is not a valid config (one line; `--check` shows
    /// where with [`ConfigError::render`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key file or the keys directory is refused.
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    /// A file or directory is not safe to trust (owner, mode, ACL), or the user is unknown.
    #[error(transparent)]
    Trust(#[from] ruroco_kit::trust::TrustError),
    /// The replay state cannot be read or is corrupt.
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
    /// The UDP socket cannot be taken or bound.
    #[error(transparent)]
    Socket(#[from] activation::ActivationError),
    /// The privilege drop failed or could not be verified.
    #[error(transparent)]
    Privileges(#[from] privileges::PrivError),
    /// Landlock or seccomp could not be applied.
    #[error("sandbox: {0}")]
    Sandbox(#[from] sandbox::SandboxError),
    /// The async runtime, a signal stream, the timer or the writer thread failed.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

impl ExitStatus for ServerError {
    fn exit_code(&self) -> u8 {
        match self {
            ServerError::Config(_)
            | ServerError::Keys(_)
            | ServerError::Trust(_)
            | ServerError::Replay(_) => exit::CONFIG,
            ServerError::Socket(activation::ActivationError::TooMany(_)) => exit::CONFIG,
            ServerError::Socket(_) => exit::IOERR,
            ServerError::Privileges(
                privileges::PrivError::NoUser(_) | privileges::PrivError::RootUser(_),
            ) => exit::CONFIG,
            ServerError::Privileges(_) => exit::NOPERM,
            ServerError::Sandbox(_) | ServerError::Runtime(_) => exit::SOFTWARE,
        }
    }
}

impl ServerError {
    /// The form `--check` prints: a config error with its line and a caret under the
    /// problem, anything else as its one line.
    pub(crate) fn render(&self) -> String {
        match self {
            ServerError::Config(e) => e.render(),
            e => e.to_string(),
        }
    }
}
