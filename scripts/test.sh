#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up on a fresh Debian machine (as root), format, lint,
# license/source policy, unit + black-box + end-to-end tests, packages and the booted-systemd
# install test. Usage: scripts/test.sh [--quick]   (--quick skips packaging and the install test)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: run as root (the tests start daemons as root and as nobody)" >&2
    exit 77
fi

export DEBIAN_FRONTEND=noninteractive
# systemd: systemd-socket-activate; util-linux: setpriv; python3-minimal: /usr/bin/python3 for
# a stub peer running as nobody; acl: setfacl for the trusted-path tests; fail2ban:
# fail2ban-regex checks the shipped filter against the server's log (tests/tests/fail2ban.rs);
# the rest serves the package install test.
apt_pkgs=(systemd util-linux procps iproute2 ca-certificates python3-minimal acl fail2ban)
[ "$quick" = 1 ] || apt_pkgs+=(debootstrap systemd-container lintian rpm)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# fail2ban is installed now: its test may not skip.
export RUROCO_REQUIRE_FAIL2BAN=1
getent passwd nobody >/dev/null || { echo "no user nobody on this machine" >&2; exit 1; }

step "toolchain components"
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
# `cargo install` puts tools in $CARGO_HOME/bin, which a fresh shell may not have on PATH.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny

# Every crate in Cargo.lock, for every platform: a build fetches only this platform's crates,
# while `cargo deny --offline` reads them all (a cold registry would fail there).
step "cargo fetch --locked"
cargo fetch --locked

# An independent decoder of the wire format (client/tests/send.rs::independent_decoder_agrees)
# needs Python's cryptography >= 42 (AES-GCM-SIV); once it is there the test may not skip.
if command -v python3 >/dev/null; then
    py_probe='from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV'
    python3 -c "$py_probe" 2>/dev/null ||
        python3 -m pip install -q --disable-pip-version-check 'cryptography>=42' >/dev/null 2>&1 ||
        echo "note: could not install Python's cryptography; the independent decoder check will skip"
    python3 -c "$py_probe" 2>/dev/null && export RUROCO_REQUIRE_PY_DECODER=1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo deny (licenses, bans, sources)"
cargo deny --offline check licenses bans sources

# The root commander never decrypts: built on its own it must link no cipher crate. (A
# workspace build unifies features, so only the per-package tree shows it.)
step "the commander links no cipher (cargo tree -p ruroco-commander)"
if cargo tree -p ruroco-commander -e normal --locked --prefix none |
    grep -E '^(aes|aes-gcm-siv|polyval|ctr|ghash) '; then
    echo "ruroco-commander depends on the cipher crates above: keep ruroco-proto's aead feature off"
    exit 1
fi
# ...and its code builds without the cipher (a workspace build would lend it `aead`).
cargo check -p ruroco-commander --locked

step "cargo build (the binaries the end-to-end tests start; same profile as the tests)"
cargo build --workspace --locked

step "cargo test (unit, property, black-box, end-to-end)"
cargo test --workspace --locked

step "benchmark smoke (runs every measurement briefly; never fails on a number)"
cargo run -q -p ruroco-bench --bin bench --locked -- --smoke --json target/bench-smoke.json

if [ "$quick" = 0 ]; then
    step "packages: packaging/build.sh --profile dev (packages the binaries built above)"
    packaging/build.sh --profile dev

    step "lintian: no errors in the .deb packages"
    lintian --fail-on error target/debian/ruroco_*.deb target/debian/ruroco-client_*.deb

    step "install test in a booted systemd (packaging/install-test.sh)"
    packaging/install-test.sh
fi

echo
echo "scripts/test.sh: all checks passed"
