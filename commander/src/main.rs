//! ruroco-commander: a thin wrapper around the library's `run`; it must never hold logic.
#![forbid(unsafe_code)]

fn main() {
    match ruroco_commander::run() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("ruroco-commander: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
