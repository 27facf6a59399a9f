//! Every way the commander's process can end in failure, and the sysexits(3) status each one
//! exits with (the table in manual.rs `EXIT_STATUS` lists the same codes).
//! It must never map two kinds of failure an operator fixes differently to one message, nor
//! carry more than one line for the journal (only `--check` renders a config error's caret).

use ruroco_kit::config_error::ConfigError;
use ruroco_kit::exit::{self, ExitStatus};

use crate::control::ControlError;
use crate::socket::SocketError;
use crate::store::GrantError;

/// Why the commander (daemon, `--check` or an operator command) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(
        "must run as root (euid 0), it runs the configured commands as root: start it via systemd (ruroco-commander.service) or sudo"
    )]
    NotRoot,
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A config error found by `--check`: printed with its line and a caret under the problem.
    #[error("{}", .0.render())]
    Check(ConfigError),
    #[error("refusing config: {0}")]
    Trust(ruroco_kit::trust::TrustError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Grants(#[from] GrantError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("no grant matches")]
    NoMatch,
    #[error("{0}")]
    ReloadFailed(String),
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The same error as `--check` reports it: a config error with its line and caret.
    pub(crate) fn for_check(self) -> Self {
        match self {
            Error::Config(e) => Error::Check(e),
            e => e,
        }
    }
}

impl ExitStatus for Error {
    fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::NotRoot => exit::NOPERM,
            Error::Config(_) | Error::Check(_) | Error::Trust(_) | Error::ReloadFailed(_) => {
                exit::CONFIG
            }
            Error::NoMatch => exit::FAILURE,
            Error::Grants(GrantError::Corrupt { .. } | GrantError::TooMany { .. }) => exit::DATAERR,
            Error::Grants(GrantError::Untrusted(_))
            | Error::Socket(
                SocketError::UnsafeDir { .. } | SocketError::Untrusted(_) | SocketError::TooMany(_),
            ) => exit::CONFIG,
            Error::Grants(GrantError::Io { .. } | GrantError::BootId { .. }) | Error::Socket(_) => {
                exit::IOERR
            }
            Error::Control(ControlError::NotRoot { .. } | ControlError::Refused(_)) => exit::NOPERM,
            Error::Control(_) => exit::UNAVAILABLE,
            Error::Os { .. } => exit::OSERR,
        }
    }
}
