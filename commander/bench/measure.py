#!/usr/bin/env python3
"""Manual measurement of ruroco-commander (run as root; not a test, numbers vary by machine).

Throughput: one connection writes N frames for the command `true` as fast as it can, with
max_parallel 1 and 4 (queue large enough that nothing is dropped); commands/s = N / time until
the log holds N `executed` lines. The commander's own CPU per command comes from /proc/PID/stat.
Latency: frames every 10 ms for `echo $RUROCO_IP $(date +%s%N)`; delay = the time `date` ran in
the command minus the time the frame was written (includes fork/exec of sh and date).

Usage: commander/bench/measure.py [PATH_TO_ruroco-commander]   (default target/debug/...)
"""
import hashlib, os, socket, subprocess, sys, tempfile, time

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "../../target/debug/ruroco-commander")


def frame(name, ip):
    cmd = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return cmd + b"\0" * 10 + b"\xff\xff" + bytes(int(x) for x in ip.split("."))


def start(d, par, cmds):
    cfg = (f'server_user = "root"\nsocket = "{d}/s.sock"\nsocket_group = "root"\n'
           f'state_dir = "{d}/state"\nmax_parallel = {par}\nqueue = 65536\n[commands]\n{cmds}\n')
    with open(f"{d}/c.toml", "w") as f:
        f.write(cfg)
    os.chmod(f"{d}/c.toml", 0o600)
    p = subprocess.Popen([BIN, "--config", f"{d}/c.toml"], stderr=open(f"{d}/log", "w"))
    deadline = time.time() + 20
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(f"{d}/s.sock")
            return p, s
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.01)


def executed(d):
    with open(f"{d}/log") as f:
        return f.read().count('event="executed"')


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def throughput(par, n=3000):
    d = tempfile.mkdtemp()
    p, s = start(d, par, 't = "true"')
    c0, t0 = cpu_seconds(p.pid), time.perf_counter()
    s.sendall(b"".join(frame("t", f"10.0.{i // 256}.{i % 256}") for i in range(n)))
    while executed(d) < n:
        time.sleep(0.005)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(p.pid) - c0
    p.terminate()
    p.wait()
    return n / elapsed, cpu / n * 1e6


def latency(n=500):
    d = tempfile.mkdtemp()
    p, s = start(d, 4, f'l = "echo $RUROCO_IP $(date +%s%N) >> {d}/out"')
    sent = {}
    for i in range(n):
        ip = f"10.1.{i // 256}.{i % 256}"
        sent[ip] = time.time_ns()
        s.sendall(frame("l", ip))
        time.sleep(0.01)
    while executed(d) < n:
        time.sleep(0.01)
    p.terminate()
    p.wait()
    with open(f"{d}/out") as f:
        ds = sorted((int(t) - sent[ip]) / 1e6 for ip, t in (l.split() for l in f))
    return ds[len(ds) // 2], ds[int(len(ds) * 0.99)]


if __name__ == "__main__":
    for par in (1, 4):
        runs = [throughput(par) for _ in range(3)]
        print(f"max_parallel={par}: commands/s " + ", ".join(f"{r:.0f}" for r, _ in runs)
              + "; commander CPU per command (us) " + ", ".join(f"{c:.0f}" for _, c in runs))
    p50, p99 = latency()
    print(f"frame written -> command running: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
