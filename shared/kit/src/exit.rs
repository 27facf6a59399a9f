//! Exit statuses of the three binaries, from sysexits.h (sysexits(3)), and the one trait
//! through which an error names its status. A binary's `main` is always
//! `fn main() -> ExitCode { ExitCode::from(ruroco_x::run()) }` with `run() -> u8`.

/// Success.
pub const OK: u8 = 0;
/// "No match" style failure that is not an error (e.g. `ruroco-commander revoke` found nothing).
pub const FAILURE: u8 = 1;
/// EX_USAGE: the command line was wrong.
pub const USAGE: u8 = 64;
/// EX_DATAERR: input data (a key file, a state file) was malformed.
pub const DATAERR: u8 = 65;
/// EX_NOINPUT: an input file did not exist or was not readable.
pub const NOINPUT: u8 = 66;
/// EX_NOUSER: a named user or group does not exist.
pub const NOUSER: u8 = 67;
/// EX_NOHOST: a host name did not resolve.
pub const NOHOST: u8 = 68;
/// EX_UNAVAILABLE: a service (the daemon to signal, the commander) is not available.
pub const UNAVAILABLE: u8 = 69;
/// EX_SOFTWARE: an internal error (sandbox set-up, the async runtime).
pub const SOFTWARE: u8 = 70;
/// EX_OSERR: an operating-system call failed (fork, exec, pipe).
pub const OSERR: u8 = 71;
/// EX_CANTCREAT: an output file could not be created.
pub const CANTCREAT: u8 = 73;
/// EX_IOERR: an I/O error on a file or socket.
pub const IOERR: u8 = 74;
/// EX_NOPERM: insufficient permission, or a privilege drop that could not be verified.
pub const NOPERM: u8 = 77;
/// EX_CONFIG: the configuration (a config file, key directory, state directory) is wrong.
pub const CONFIG: u8 = 78;

/// An error that knows the process exit status it ends with (one of the constants above).
pub trait ExitStatus {
    /// The sysexits(3) status for this error.
    fn exit_code(&self) -> u8;
}
