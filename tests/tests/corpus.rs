//! Replays every checked-in fuzz corpus (`fuzz/corpus/<target>/*`) on stable through the very
//! functions the cargo-fuzz targets call (`fuzz/src/lib.rs`, included here as a module).
//! No input may panic; seeds named `ok-*` must be accepted and `bad-*` rejected; any other
//! file (one a fuzzer added) only has to not panic. Never depends on nightly or on libFuzzer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn names_in(dir: &Path, strip_rs: bool) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| {
            if strip_rs {
                n.strip_suffix(".rs").map(str::to_owned)
            } else {
                Some(n)
            }
        })
        .collect()
}

/// Run one corpus; returns (ok seeds, bad seeds, other files) counts.
fn replay(target: &str, check: fuzz_checks::Check) -> (usize, usize, usize) {
    let dir = fuzz_dir().join("corpus").join(target);
    let all = files(&dir);
    assert!(!all.is_empty(), "corpus {} is empty", dir.display());
    let (mut ok, mut bad, mut other) = (0, 0, 0);
    for path in all {
        let data = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let outcome = std::panic::catch_unwind(|| check(&data))
            .unwrap_or_else(|_| panic!("{target}: input {} panicked", path.display()));
        if name.starts_with("ok-") {
            assert!(
                outcome.is_ok(),
                "{target}: valid seed {} was rejected: {:?}",
                path.display(),
                outcome
            );
            ok += 1;
        } else if name.starts_with("bad-") {
            assert!(
                outcome.is_err(),
                "{target}: invalid seed {} was accepted",
                path.display()
            );
            bad += 1;
        } else {
            other += 1;
        }
    }
    (ok, bad, other)
}

#[test]
fn every_target_has_a_corpus_a_binary_and_a_replay() {
    let listed: BTreeSet<String> = fuzz_checks::TARGETS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    let corpora = names_in(&fuzz_dir().join("corpus"), false);
    let binaries = names_in(&fuzz_dir().join("fuzz_targets"), true);
    assert_eq!(listed, corpora, "fuzz/corpus/* must match TARGETS");
    assert_eq!(
        listed, binaries,
        "fuzz/fuzz_targets/*.rs must match TARGETS"
    );
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &listed {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml lacks a [[bin]] for {name}"
        );
    }
}

#[test]
fn corpus_datagram() {
    let (ok, bad, _) = replay("datagram", fuzz_checks::datagram);
    assert!(ok >= 6 && bad >= 5, "datagram seeds: {ok} ok, {bad} bad");
}

#[test]
fn corpus_plaintext() {
    let (ok, bad, _) = replay("plaintext", fuzz_checks::plaintext);
    assert!(ok >= 6 && bad >= 6, "plaintext seeds: {ok} ok, {bad} bad");
}

#[test]
fn corpus_frame() {
    let (ok, bad, _) = replay("frame", fuzz_checks::frame);
    assert!(ok >= 2 && bad >= 2, "frame seeds: {ok} ok, {bad} bad");
}

#[test]
fn corpus_key_file() {
    let (ok, bad, _) = replay("key_file", fuzz_checks::key_file);
    assert!(ok >= 2 && bad >= 3, "key_file seeds: {ok} ok, {bad} bad");
}

#[test]
fn corpus_server_config() {
    let (ok, bad, _) = replay("server_config", fuzz_checks::server_config);
    assert!(
        ok >= 2 && bad >= 5,
        "server_config seeds: {ok} ok, {bad} bad"
    );
}

#[test]
fn corpus_commander_config() {
    let (ok, bad, _) = replay("commander_config", fuzz_checks::commander_config);
    assert!(
        ok >= 2 && bad >= 4,
        "commander_config seeds: {ok} ok, {bad} bad"
    );
}

#[test]
fn corpus_replay_state() {
    let (ok, bad, _) = replay("replay_state", fuzz_checks::replay_state);
    assert!(
        ok >= 2 && bad >= 5,
        "replay_state seeds: {ok} ok, {bad} bad"
    );
}

/// Cheap stand-in for fuzzing on stable: every single-bit flip and every truncation of each
/// valid datagram seed is rejected without a panic.
#[test]
fn datagram_mutations_of_valid_seeds_are_rejected() {
    let dir = fuzz_dir().join("corpus/datagram");
    let mut n = 0;
    for path in files(&dir) {
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("ok-")
        {
            continue;
        }
        let seed = std::fs::read(&path).unwrap();
        for bit in 0..seed.len() * 8 {
            let mut d = seed.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(
                fuzz_checks::datagram(&d).is_err(),
                "{}: flip of bit {bit} accepted",
                path.display()
            );
            n += 1;
        }
        for len in 0..seed.len() {
            assert!(fuzz_checks::datagram(&seed[..len]).is_err());
        }
    }
    assert!(n > 0, "no valid datagram seeds found");
}
