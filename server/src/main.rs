//! ruroco-server: a thin wrapper around the library's `run`.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(ruroco_server::run());
}
