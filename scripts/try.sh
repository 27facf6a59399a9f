#!/usr/bin/env bash
# Try ruroco on this machine in one command (as root, no systemd as PID 1 needed): builds, starts
# a commander and a socket-activated, unprivileged server on loopback with a fresh key and two
# example commands, sends `hello` and `open_demo` with the client, shows what ran and the
# structured log lines, then stops everything and removes its temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${RUROCO_TRY_PORT:-34020}

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/try.sh: run as root (the commander is the root half of ruroco)" >&2
    exit 77
fi
export DEBIAN_FRONTEND=noninteractive
for p in systemd util-linux; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd util-linux >/dev/null
        break
    fi
done

if ! command -v cargo >/dev/null; then
    echo "scripts/try.sh: cargo not found: install Rust first (https://rustup.rs), then run me again" >&2
    exit 69
fi

# /proc/net/udp lists local addresses as HEXIP:HEXPORT (0100007F is 127.0.0.1, 00000000 any).
port_hex=$(printf '%04X' "$port")
if grep -qE "^ *[0-9]+: (0100007F|00000000):$port_hex " /proc/net/udp; then
    echo "scripts/try.sh: UDP port $port is taken on this machine: RUROCO_TRY_PORT=<free port> $0" >&2
    exit 75
fi

echo "==> building (cargo build --locked)"
cargo build --locked -q -p ruroco-server -p ruroco-commander -p ruroco-client
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

demo=$(mktemp -d /tmp/ruroco-try.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$demo"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 0755 "$demo"
mkdir -p "$demo/bin" "$demo/keys" "$demo/state" "$demo/run" "$demo/commander-state" "$demo/client"
# Binaries are copied so the unprivileged server can execute them wherever the checkout lives.
cp "$target/debug/ruroco-server" "$target/debug/ruroco-commander" "$target/debug/ruroco-client" "$demo/bin/"
chmod 0755 "$demo/bin" "$demo/bin"/* "$demo/run"

echo "==> generating a key"
"$demo/bin/ruroco-client" gen -o "$demo/keys/demo.key"
# The modes both daemons' checks demand (as the package installs them): the keys directory and
# key root's to change and readable by the server's group, the state directory the server's.
chown root:nogroup "$demo/keys" "$demo/keys/demo.key"
chmod 0750 "$demo/keys"
chmod 0640 "$demo/keys/demo.key"
chown nobody:nogroup "$demo/state"
# The client keeps its own copy, 0600 and owned by whoever runs it (here: you), as on a real
# client; the server's 0640 root:nogroup file would draw the client's "readable by its group"
# warning.
install -m 0600 -o "$(id -u)" -g "$(id -g)" "$demo/keys/demo.key" "$demo/client.key"
chmod 0700 "$demo/state" "$demo/commander-state"

cat > "$demo/commander.toml" <<TOML
server_user = "nobody"
socket = "$demo/run/commander.sock"
socket_group = "nogroup"
state_dir = "$demo/commander-state"
control_socket = "$demo/control/control.sock"
max_parallel = 4

[commands]
hello = "echo hello from \$RUROCO_IP"
open_demo = { run = "echo opened for \$RUROCO_IP >> $demo/firewall.log", undo = "echo closed for \$RUROCO_IP >> $demo/firewall.log", undo_after = "5m" }
TOML
chmod 0600 "$demo/commander.toml"

cat > "$demo/server.toml" <<TOML
ips = ["127.0.0.1"]
listen = "127.0.0.1:$port"
keys_dir = "$demo/keys"
state_dir = "$demo/state"
commander_socket = "$demo/run/commander.sock"
user = "nobody"
TOML
chmod 0644 "$demo/server.toml"
echo "==> ruroco-server --check and ruroco-commander --check"
"$demo/bin/ruroco-server" --config "$demo/server.toml" --check >/dev/null
"$demo/bin/ruroco-commander" --config "$demo/commander.toml" --check >/dev/null

echo "==> starting ruroco-commander (root)"
"$demo/bin/ruroco-commander" --config "$demo/commander.toml" 2>"$demo/commander.log" &
pids+=($!)
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local until=$((SECONDS + $1)) what=$2; shift 2
    until "$@"; do
        if [ $SECONDS -ge $until ]; then
            echo "timed out waiting for $what" >&2
            echo "--- commander log"; cat "$demo/commander.log" >&2
            echo "--- server log"; cat "$demo/server.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
}
wait_for 20 "the commander socket" test -S "$demo/run/commander.sock"

echo "==> starting ruroco-server as nobody under systemd-socket-activate on 127.0.0.1:$port/udp"
systemd-socket-activate --datagram -l "127.0.0.1:$port" \
    setpriv --reuid=nobody --regid=nogroup --clear-groups --bounding-set=-all --no-new-privs \
    "$demo/bin/ruroco-server" --config "$demo/server.toml" 2>"$demo/server.log" &
pids+=($!)
udp_listening() { grep -q "0100007F:$port_hex " /proc/net/udp; }
wait_for 20 "the UDP socket" udp_listening

echo "==> ruroco-client send -a 127.0.0.1:$port -k client.key -c hello"
"$demo/bin/ruroco-client" --state-dir "$demo/client" send -a "127.0.0.1:$port" -k "$demo/client.key" -c hello
wait_for 20 "hello to run" grep -qs "hello from 127.0.0.1" "$demo/commander.log"
echo "==> ruroco-client send -a 127.0.0.1:$port -k client.key -c open_demo   (a grant: undo after 5 min)"
"$demo/bin/ruroco-client" --state-dir "$demo/client" send -a "127.0.0.1:$port" -k "$demo/client.key" -c open_demo
wait_for 20 "open_demo to be granted" grep -Eqs '(^| )event=granted( |$)' "$demo/commander.log"
echo "==> ruroco-commander grants"
"$demo/bin/ruroco-commander" --control "$demo/control/control.sock" grants
echo "==> ruroco-commander revoke open_demo   (runs the undo now)"
"$demo/bin/ruroco-commander" --control "$demo/control/control.sock" revoke open_demo
wait_for 20 "the undo" grep -qs "closed for 127.0.0.1" "$demo/firewall.log"

echo
echo "--- what the commands did"
grep -h "hello from" "$demo/commander.log" | sed 's/^/  commander: /' | head -3
sed 's/^/  firewall.log: /' "$demo/firewall.log"
echo
echo "--- server log (structured)"
# Only the server's logfmt lines: systemd-socket-activate writes its own lines to the same file.
sed -n 's/^ts=/  ts=/p' "$demo/server.log"
echo
echo "--- commander log (structured)"
sed 's/^/  /' "$demo/commander.log"
echo
echo "ruroco works on this machine. Everything ran from $demo, which is removed now."
