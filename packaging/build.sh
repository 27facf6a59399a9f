#!/usr/bin/env bash
# Builds ruroco's packages: the server side (`ruroco`: ruroco-server, ruroco-commander, systemd
# units, sysusers.d, tmpfiles.d, example configs, man pages) and the client (`ruroco-client`),
# each as .deb (cargo-deb) and .rpm (cargo-generate-rpm). Prints the paths of the packages.
#
#   packaging/build.sh [--profile release|dev]
#
# release (default) is what operators install. The test script passes `--profile dev` to package
# the binaries `cargo build --workspace --locked` already built instead of building again.
# Installs cargo-deb and cargo-generate-rpm with `cargo install --locked` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
while [ $# -gt 0 ]; do
    case "$1" in
    --profile) profile="${2:?--profile needs release or dev}"; shift 2 ;;
    --profile=*) profile="${1#--profile=}"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "packaging/build.sh: unknown argument $1 (usage: build.sh [--profile release|dev])" >&2; exit 64 ;;
    esac
done
case "$profile" in
release) profile_dir=release; build_flag=(--release) ;;
dev) profile_dir=debug; build_flag=() ;;
*) echo "packaging/build.sh: --profile must be release or dev, not $profile" >&2; exit 64 ;;
esac

say() { printf '==> %s\n' "$*" >&2; }

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
for tool in cargo-deb cargo-generate-rpm; do
    if ! command -v "$tool" >/dev/null; then
        say "cargo install --locked $tool"
        cargo install --locked "$tool"
    fi
done
for tool in strip gzip; do
    command -v "$tool" >/dev/null || { echo "packaging/build.sh: $tool is missing (apt-get install binutils gzip)" >&2; exit 69; }
done

# The same command as the test script, so with --profile dev nothing is rebuilt.
say "cargo build --workspace --locked ${build_flag[*]:-}"
cargo build --workspace --locked "${build_flag[@]}"

target=target
docs="$target/ruroco-docs"
say "man pages and completions into $docs"
rm -rf "$docs"
"$target/$profile_dir/gen-docs" "$docs" >/dev/null
gzip -9n "$docs"/man/*.[18]

# cargo-deb strips the binaries itself; cargo-generate-rpm does not, so it packages these.
stripped="$target/ruroco-stripped"
rm -rf "$stripped" && mkdir -p "$stripped"
for bin in ruroco-server ruroco-commander ruroco-client; do
    strip -o "$stripped/$bin" "$target/$profile_dir/$bin"
done

rm -f "$target"/debian/ruroco*.deb "$target"/generate-rpm/ruroco*.rpm
# -q hides cargo-deb's warnings about assets outside target/release (the generated docs) and
# about the dev profile, both intended here; errors still stop the build. dev: quicker xz.
deb_flags=(--no-build --profile "$profile" --strip --no-dbgsym --locked -q)
[ "$profile" = dev ] && deb_flags+=(--fast)
for crate in server client; do
    say "cargo deb -p ruroco-$crate"
    cargo deb -p "ruroco-$crate" "${deb_flags[@]}" >/dev/null
    say "cargo generate-rpm -p $crate"
    cargo generate-rpm -p "$crate" --profile "$profile" >/dev/null
done

ls -1 "$target"/debian/ruroco*.deb "$target"/generate-rpm/ruroco*.rpm
