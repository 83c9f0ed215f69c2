#!/usr/bin/env python3
"""Times exec -> first `GET /readyz` 200 of `tagger serve`, interleaving several binaries, and
prints per binary the median wall time, the process CPU time until ready, the RSS at ready
and its peak while loading.
Standard library only.

    python3 examples/startup_bench.py [--runs 15] BINARY [BINARY...]

Each start polls /readyz on loopback every 2 ms (a fresh connection each time); once it answers
200 the RSS and its peak are read from /proc/PID/status and the process is killed (SIGKILL), and its CPU
time comes from wait4's rusage (user + system, all threads). The binaries take turns, so a
neighbour's load hits them alike. Extra environment: TAGGER_ARGS (added to `serve`).
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readyz_status(port):
    """The status code of GET /readyz, or None while nothing listens."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def rss_mb(pid):
    """The resident set now and its peak so far (VmRSS, VmHWM), in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


def one_start(binary, timeout=20.0):
    port = free_port()
    args = [binary, "serve", "--addr", f"127.0.0.1:{port}"] + os.environ.get("TAGGER_ARGS", "").split()
    env = dict(os.environ, TAGGER_LOG="warn")
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if readyz_status(port) == 200:
                wall = time.perf_counter() - t0
                break
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{binary} did not become ready (exit {proc.returncode})")
            time.sleep(0.002)
        rss = rss_mb(proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = -9
    return wall, usage.ru_utime + usage.ru_stime, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--runs", type=int, default=15)
    options = parser.parse_args()
    results = {b: [] for b in options.binaries}
    for _ in range(options.runs):
        for binary in options.binaries:
            results[binary].append(one_start(binary))
    for binary, runs in results.items():
        walls = sorted(r[0] * 1e3 for r in runs)
        cpus = [r[1] * 1e3 for r in runs]
        rss = [r[2][0] for r in runs]
        peak = [r[2][1] for r in runs]
        print(
            f"{binary}: exec -> /readyz 200 median {statistics.median(walls):.0f} ms "
            f"(min {walls[0]:.0f}, max {walls[-1]:.0f}, n={len(walls)}); "
            f"CPU until ready median {statistics.median(cpus):.0f} ms; "
            f"RSS at ready median {statistics.median(rss):.0f} MB (peak while loading "
            f"{statistics.median(peak):.0f} MB)"
        )


if __name__ == "__main__":
    main()
