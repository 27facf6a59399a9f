//! cargo-fuzz target `plaintext`: feeds arbitrary bytes to ruroco_fuzz::plaintext.
//! Never adds checks of its own: the stable corpus replay must exercise exactly the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ruroco_fuzz::plaintext(data);
});
