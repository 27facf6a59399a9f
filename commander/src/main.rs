//! ruroco-commander: a thin wrapper around the library's `run`; it must never hold logic.
#![forbid(unsafe_code)]

fn main() {
    // A command with `user` re-executes this binary to drop to that user (see exec.rs).
    ruroco_commander::exec::run_as_if_asked();
    match ruroco_commander::run() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("ruroco-commander: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
