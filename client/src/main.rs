//! ruroco-client binary: runs the library and exits with the status it returns. Must never
//! hold logic of its own.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(ruroco_client::run())
}
