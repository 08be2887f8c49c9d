#!/usr/bin/env python3
"""Proxy benchmark: what the HTTP proxy adds to each request.

Starts one litefs-rs node (static lease, the primary) with its proxy in front of a small
Python web app (HTTP/1.1, keep-alive), then times requests from one keep-alive client, in
alternating blocks, straight to the app and through the proxy:

- read:  GET /ping (the app answers a constant; the proxy's own cost);
- read+cookie: GET /ping with a __txid cookie the node has already reached;
- write: POST /items (the app inserts a row through the mount; the proxy sets the cookie).

Prints the median and p99 latency of each kind both ways, and the ratio proxy/direct.
Usually started by scripts/bench-proxy.sh, which builds litefs-rs:

    python3 bench/proxy_bench.py --bin BIN [--requests 3000] [--block 250]

Every process it starts is stopped by its PID, and the mount unmounted, however it ends.
Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

APP = r'''
import http.server, sqlite3, sys
db, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response, sent at once (no Nagle and delayed-ACK stalls).
    wbufsize = -1
    disable_nagle_algorithm = True
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.reply(200, b"ok")
    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("INSERT INTO t(v) VALUES (?)", (data,))
        c.close()
        self.reply(201, b"created")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def is_mounted(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split(" ")[1] == path for line in f)


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(conn: http.client.HTTPConnection, method: str, headers: dict, body) -> float:
    t = time.perf_counter()
    conn.request(method, "/ping" if method == "GET" else "/items", body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    took = time.perf_counter() - t
    if resp.status not in (200, 201):
        raise RuntimeError(f"{method} answered {resp.status}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the litefs-rs binary")
    ap.add_argument("--requests", type=int, default=3000, help="requests of each kind, each way")
    ap.add_argument("--block", type=int, default=250, help="requests per alternating block")
    ap.add_argument("--command", default="", help="the command line, for the report")
    ap.add_argument("--note", default="", help="a line for the report (the build)")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix="litefs-proxy-bench-")
    mnt, data = os.path.join(work, "mnt"), os.path.join(work, "data")
    os.makedirs(mnt)
    api, proxy, app_port = free_port(), free_port(), free_port()
    with open(os.path.join(work, "litefs.yml"), "w") as f:
        f.write(
            f"fuse:\n  dir: {mnt}\ndata:\n  dir: {data}\nhttp:\n  addr: 127.0.0.1:{api}\n"
            f"lease:\n  type: static\n  candidate: true\n  hostname: bench\n"
            f"  advertise-url: http://127.0.0.1:{api}\n"
            f"proxy:\n  addr: 127.0.0.1:{proxy}\n  target: 127.0.0.1:{app_port}\n  db: bench.db\n"
        )
    procs: list[subprocess.Popen] = []
    log = open(os.path.join(work, "litefs.log"), "w")
    try:
        node = subprocess.Popen(
            [args.bin, "mount", "-config", os.path.join(work, "litefs.yml")],
            stdout=log, stderr=subprocess.STDOUT)
        procs.append(node)
        if not wait_until(lambda: is_mounted(mnt) and listening(api), 30):
            raise RuntimeError("the node did not start")
        db = os.path.join(mnt, "bench.db")
        subprocess.run(["sqlite3", db, "PRAGMA journal_mode=wal; CREATE TABLE t(v)"],
                       check=True, capture_output=True)
        procs.append(subprocess.Popen([sys.executable, "-c", APP, db, str(app_port)]))
        if not wait_until(lambda: listening(app_port) and listening(proxy), 30):
            raise RuntimeError("the app or the proxy did not start")
        with open(os.path.join(mnt, "bench.db-pos")) as f:
            txid = f.read().split("/")[0]
        kinds = {
            "read": ("GET", {}, None),
            "read+cookie": ("GET", {"Cookie": f"__txid={txid}"}, None),
            "write": ("POST", {"Content-Type": "text/plain"}, b"x" * 100),
        }
        conns = {way: http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                 for way, port in (("direct", app_port), ("proxy", proxy))}
        times = {(k, w): [] for k in kinds for w in conns}
        # Warm-up, then ABAB blocks so that drifts of a shared machine hit both ways alike.
        for (method, headers, body) in kinds.values():
            for conn in conns.values():
                for _ in range(50):
                    timed(conn, method, headers, body)
        for name, (method, headers, body) in kinds.items():
            done = 0
            order = ["direct", "proxy"]
            while done < args.requests:
                n = min(args.block, args.requests - done)
                for way in order:
                    for _ in range(n):
                        times[(name, way)].append(timed(conns[way], method, headers, body))
                order.reverse()
                done += n
        print(f"# Proxy benchmark ({args.requests} requests of each kind each way, "
              f"blocks of {args.block}, one keep-alive client)")
        if args.command:
            print(f"# command: {args.command}")
        if args.note:
            print(f"# {args.note}")
        print()
        print("| request | direct median | proxy median | ratio | direct p99 | proxy p99 | ratio |")
        print("|---|---|---|---|---|---|---|")
        for name in kinds:
            d, p = times[(name, "direct")], times[(name, "proxy")]
            dm, pm = statistics.median(d), statistics.median(p)
            d99, p99 = percentile(d, 99), percentile(p, 99)
            print(f"| {name} | {dm * 1e6:.0f} µs | {pm * 1e6:.0f} µs | {pm / dm:.2f} | "
                  f"{d99 * 1e6:.0f} µs | {p99 * 1e6:.0f} µs | {p99 / d99:.2f} |")
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        log.close()
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
        for leftover in (mnt, os.path.join(data, "locks")):
            if is_mounted(leftover):
                subprocess.run(["fusermount3", "-u", "-z", leftover], check=False)
        if not is_mounted(mnt):
            subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    sys.exit(main())
