//! ruroco-client: a thin wrapper around the library's `run`; it must never hold logic.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(ruroco_client::run())
}
