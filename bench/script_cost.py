#!/usr/bin/env python3
"""Redis's own cost of src/backend/redis/decide.lua per decision, by decisions per call.

Starts a private redis-server on a free loopback port, loads the script, and sends
pipelined EVALSHA calls of 1, 16 and 64 one-band token-bucket decisions over 1000 keys, with
limits packed as the backend packs them. The time is Redis's own (INFO commandstats), so the
speed of this client does not matter.

    bench/script_cost.py [calls per size] [lease]      (default 4000; no lease)

With `lease`, every decision also asks for (and gets) a lease of 10 units for 100 ms, as
`redis_lease` makes it ask.

Needs redis-server and redis-cli.
"""
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "src", "backend", "redis", "decide.lua")


def resp(args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def cli(port, *args):
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(port, sha, batch, calls, lease):
    # Algorithm 1 (token bucket), no flags, cost 1, no lease (or 10 units for 100 ms), no deadline, one band:
    # capacity 1,000,000, 1000 tokens/s.
    units, lease_us = (10.0, 100_000.0) if lease else (0.0, 0.0)
    spec = struct.pack("<BBddddB", 1, 0, 1.0, units, lease_us, 0.0, 1) + struct.pack("<dd", 1_000_000.0, 1000.0)
    cli(port, "CONFIG", "RESETSTAT")
    with socket.create_connection(("127.0.0.1", port)) as conn:
        pending = []
        for _ in range(calls):
            keys = ["tollgate:{default:id:client-%d}" % random.randrange(1000) for _ in range(batch)]
            pending.append(resp(["EVALSHA", sha, str(batch), *keys, *([spec] * batch)]))
            if len(pending) == 16:
                conn.sendall(b"".join(pending))
                pending = []
        conn.sendall(b"".join(pending) + resp(["PING"]))
        data = b""
        while not data.endswith(b"+PONG\r\n"):
            data += conn.recv(1 << 20)
        if b"\r\n-" in data or data.startswith(b"-"):
            sys.exit("the script failed: " + data[:300].decode(errors="replace"))
    for line in cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return float(line.split("usec_per_call=")[1].split(",")[0])
    sys.exit("no EVALSHA in INFO commandstats")


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    lease = len(sys.argv) > 2 and sys.argv[2] == "lease"
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install redis-server redis-tools")
    port = free_port()
    work = tempfile.mkdtemp()
    subprocess.run(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "yes", "--dir", work,
         "--logfile", os.path.join(work, "redis.log")],
        check=True,
    )
    try:
        for _ in range(100):
            try:
                if cli(port, "PING") == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.05)
        with open(SCRIPT) as f:
            sha = cli(port, "SCRIPT", "LOAD", f.read())
        print(f"{cli(port, 'INFO', 'server').splitlines()[1]}; {calls} calls per size"
              + ("; with leases" if lease else ""))
        print(f"{'decisions per call':>18} {'us per call':>12} {'us per decision':>16}")
        for batch in (1, 16, 64):
            per_call = measure(port, sha, batch, calls, lease)
            print(f"{batch:>18} {per_call:>12.2f} {per_call / batch:>16.2f}")
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "SHUTDOWN", "NOSAVE"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
