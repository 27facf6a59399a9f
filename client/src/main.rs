//! ruroco-client binary: parse nothing here; run the library and map its error to an exit
//! status. Must never hold logic of its own.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    match ruroco_client::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::from(e.exit_code())
        }
    }
}
