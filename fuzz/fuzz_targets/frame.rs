//! cargo-fuzz target `frame`: feeds arbitrary bytes to ruroco_fuzz::frame.
//! Never adds checks of its own: the stable corpus replay must exercise exactly the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ruroco_fuzz::frame(data);
});
