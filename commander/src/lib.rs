//! ruroco-commander library: all logic lives here so tests can reach it.
#![forbid(unsafe_code)]

/// Entry point called by `main`.
pub fn run() -> i32 {
    println!("ruroco-commander {}", env!("CARGO_PKG_VERSION"));
    0
}
