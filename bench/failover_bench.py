#!/usr/bin/env python3
"""Failover benchmark: two Consul-lease candidates on this machine.

Starts a Consul dev agent and two litefs-rs candidate nodes (lease.type: consul, LiteFS's
defaults: ttl 10s, lock-delay 1s, reconnect-delay 1s), waits until one is primary and the
other replicates it, then, run after run, stops the primary with SIGTERM or SIGKILL and
measures the time from the signal to the first INSERT that commits on the survivor (a new
sqlite3 connection per attempt, through the survivor's mount). The stopped node is then
restarted, must come back as a replica that has caught up, and the next run stops the new
primary (the roles alternate). SIGTERM and SIGKILL runs alternate ABBA
(term, kill, kill, term, ...), so that each node receives both signals.

A node still running --exit-timeout seconds after SIGKILL is reported with the state of its
threads, and its mount's FUSE connection is aborted (/sys/fs/fuse/connections/N/abort, as
`umount -f` does; fusectl is mounted there first if it is not) so that it exits and the runs
can go on; such a run counts as a problem, as does a run without a write in --write-timeout.

Usually started by scripts/bench-failover.sh, which builds litefs-rs, gives this script a
fresh work dir and a private copy of the binary, and stops any process left running:

    python3 bench/failover_bench.py --bin BIN --consul-bin CONSUL --workdir DIR [--runs 10]

Standard library only.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request

DB = "bench.db"
INSERT_SQL = "INSERT INTO t(v) VALUES (?)"
TTL_S, LOCK_DELAY_S = 10.0, 1.0  # LiteFS's defaults, which the nodes run with
KINDS = {"term": ("SIGTERM", signal.SIGTERM), "kill": ("SIGKILL", signal.SIGKILL)}
# The goals, and the thresholds at the median the benchmark reports against.
GOAL_S = {"term": 0.3, "kill": TTL_S + LOCK_DELAY_S + 1.0}
REQUIRED_MEDIAN_S = {"term": 1.0, "kill": 13.0}


class BenchError(Exception):
    """Something the benchmark waited for did not happen in time (or a check failed)."""


def say(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_until(cond, timeout: float, interval: float = 0.01) -> bool:
    """Polls cond() until it is true or `timeout` seconds passed."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= end:
            return False
        time.sleep(interval)
    return True


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (all held open while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def mounts_escape(path: str) -> str:
    """How /proc/self/mount{s,info} write a path (octal escapes)."""
    return (path.replace("\\", "\\134").replace(" ", "\\040")
            .replace("\t", "\\011").replace("\n", "\\012"))


def is_mounted(path: str) -> bool:
    want = mounts_escape(path)
    with open("/proc/self/mounts") as f:
        return any(line.split(" ")[1] == want for line in f if " " in line)


def fuse_connection(path: str) -> str | None:
    """The FUSE connection number of the mount at path (its device minor), as in
    /sys/fs/fuse/connections/."""
    want = mounts_escape(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4 and fields[4] == want:
                return fields[2].split(":")[1]
    return None


FUSECTL = "/sys/fs/fuse/connections"
_mounted_fusectl = False


def abort_fuse_connection(conn: str) -> str:
    """Aborts a FUSE connection (what `umount -f` does), mounting fusectl at its usual place
    first if it is not there (unmounted again at the end). Returns what was done."""
    global _mounted_fusectl
    if not os.path.isdir(os.path.join(FUSECTL, conn)):
        with open("/proc/self/mounts") as f:
            have = any(line.split(" ")[1] == FUSECTL for line in f if " " in line)
        if not have:
            if subprocess.run(["mount", "-t", "fusectl", "fusectl", FUSECTL], check=False).returncode != 0:
                return f"could not mount fusectl at {FUSECTL}"
            _mounted_fusectl = True
    try:
        with open(os.path.join(FUSECTL, conn, "abort"), "w") as f:
            f.write("1")
    except OSError as err:
        return f"could not abort FUSE connection {conn}: {err}"
    return f"aborted FUSE connection {conn} ({FUSECTL}/{conn}/abort)"


def threads_state(pid: int) -> str:
    """'PID: state wchan' for each thread that is not a zombie, e.g. 'D request_wait_answer'."""
    out = []
    try:
        for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                    wchan = f.read().strip()
            except OSError:
                continue
            if state != "Z":
                out.append(f"thread {tid} {state} {wchan}")
    except OSError:
        return "gone"
    return ", ".join(out) or "zombie"


def http_get(url: str, timeout: float = 1.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except (OSError, ValueError):
        return None


def tail(path: str, n: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as err:
        return f"(no log: {err})\n"


class Proc:
    """A child process in its own session (Ctrl-C reaches only this script, which stops the
    children in order), logging to <dir>/<name>.log, its PID in <dir>/pid for the shell's trap."""

    def __init__(self, name: str, dir_: str):
        self.name, self.dir = name, dir_
        self.log = os.path.join(dir_, f"{name}.log")
        self.pidfile = os.path.join(dir_, "pid")
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        os.makedirs(dir_, exist_ok=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def mark(self, text: str) -> None:
        """A line in the log, to find each run in it."""
        with open(self.log, "a") as f:
            f.write(f"=== {time.strftime('%H:%M:%S')} {text} ===\n")

    def spawn(self, argv: list[str]) -> None:
        self.starts += 1
        self.mark(f"start {self.starts}")
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env=dict(os.environ, NO_COLOR="1"))
        with open(self.pidfile, "w") as f:
            f.write(f"{self.proc.pid}\n")

    def reap(self, timeout: float) -> int | None:
        """Waits for the exit; the status, or None if it still runs after `timeout`."""
        if self.proc is None:
            return None
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.proc = None
        try:
            os.unlink(self.pidfile)
        except OSError:
            pass
        return status

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait; SIGKILL if still running after `timeout`."""
        if not self.running():
            return self.reap(0)
        say(f"{self.name}: stopping (SIGTERM to PID {self.proc.pid})")
        self.proc.send_signal(signal.SIGTERM)
        status = self.reap(timeout)
        if status is None and self.proc is not None:
            say(f"WARNING: {self.name}: still running {timeout:g} s after SIGTERM; SIGKILL")
            self.proc.kill()
            status = self.reap_killed(10)
        return status

    def reap_killed(self, timeout: float) -> int | None:
        """Waits for a SIGKILLed process; the status, or None if it still runs."""
        return self.reap(timeout)


class Consul(Proc):
    def __init__(self, binary: str, dir_: str):
        super().__init__("consul", dir_)
        self.binary = binary
        self.http, self.lan, self.wan, self.server = free_ports(4)
        self.url = f"http://127.0.0.1:{self.http}"

    def start(self, timeout: float) -> None:
        self.spawn([self.binary, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
                    "-http-port", str(self.http), "-serf-lan-port", str(self.lan),
                    "-serf-wan-port", str(self.wan), "-server-port", str(self.server),
                    "-dns-port", "-1", "-grpc-port", "-1", "-node", "bench", "-log-level", "warn"])

        def ready() -> bool:
            if not self.running():
                raise BenchError(f"consul exited (status {self.proc.returncode}); log:\n{tail(self.log, 30)}")
            leader = http_get(f"{self.url}/v1/status/leader")
            return leader is not None and leader.strip().startswith(b'"127.0.0.1:')

        if not wait_until(ready, timeout, 0.1):
            raise BenchError(f"consul elected no leader within {timeout:g} s; log:\n{tail(self.log, 30)}")
        say(f"consul: ready at {self.url} (PID {self.proc.pid})")

    def version(self) -> str:
        try:
            out = subprocess.run([self.binary, "version"], capture_output=True, text=True, timeout=10)
            return out.stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "consul (version unknown)"


class Node(Proc):
    def __init__(self, name: str, root: str, binary: str, port: int, consul_url: str,
                 extra_args: list[str]):
        super().__init__(name, os.path.join(root, name))
        self.binary, self.port, self.extra_args = binary, port, extra_args
        self.hostname = f"node-{port}"
        self.conn: str | None = None  # FUSE connection number of the mount
        self.stuck = ""  # set when the process did not die after SIGKILL
        self.url = f"http://127.0.0.1:{port}"
        self.mnt = os.path.join(self.dir, "mnt")
        self.config = os.path.join(self.dir, "litefs.yml")
        os.makedirs(self.mnt, exist_ok=True)
        # Only what a Consul candidate needs: every lease timing is LiteFS's default.
        with open(self.config, "w") as f:
            f.write(f'fuse:\n  dir: "{self.mnt}"\n'
                    f'data:\n  dir: "{os.path.join(self.dir, "data")}"\n'
                    f'http:\n  addr: "127.0.0.1:{port}"\n'
                    f'lease:\n  type: consul\n  candidate: true\n'
                    f'  hostname: "{self.hostname}"\n  advertise-url: "{self.url}"\n'
                    f'  consul:\n    url: "{consul_url}"\n    key: litefs/primary\n')

    def start(self, timeout: float) -> None:
        self.spawn([self.binary, "mount", "-config", self.config, *self.extra_args])
        if not wait_until(lambda: not self.running() or is_mounted(self.mnt), timeout, 0.02) \
                or not is_mounted(self.mnt):
            state = f"exited with status {self.proc.returncode}" if not self.running() \
                else f"still starting after {timeout:g} s"
            raise BenchError(f"{self.name}: the mount did not come up ({state}); log tail:\n"
                             + tail(self.log, 30))
        self.conn = fuse_connection(self.mnt)
        with open(os.path.join(self.dir, "fuse-conn"), "w") as f:
            f.write(f"{self.conn or ''}\n")

    def reap_killed(self, timeout: float) -> int | None:
        """Waits for the process after a SIGKILL. One that does not die (a thread stuck in a
        request to a FUSE mount whose server is gone, its own) is reported, and its mount's
        FUSE connection aborted, which frees it."""
        status = self.reap(timeout)
        if status is None and self.proc is not None:
            pid = self.proc.pid
            self.stuck = (f"{self.name} (PID {pid}) still running {timeout:g} s after SIGKILL: "
                          f"{threads_state(pid)}; its mount is FUSE connection {self.conn}")
            say(f"WARNING: {self.stuck}")
            say(f"    {abort_fuse_connection(self.conn) if self.conn else 'its FUSE connection is unknown'}")
            status = self.reap(10)
            say(f"    {self.name}: " + ("exited" if status is not None else "STILL running")
                + f" after the abort ({threads_state(pid) if status is None else f'status {status}'})")
        return status

    def unmount_dead(self) -> None:
        """After SIGKILL the mount stays (its FUSE server is gone): detach it."""
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], check=False)
        if is_mounted(self.mnt):
            raise BenchError(f"{self.name}: {self.mnt} still mounted after fusermount3 -u -z")

    def is_primary(self) -> bool | None:
        body = http_get(f"{self.url}/info")
        try:
            return bool(json.loads(body)["isPrimary"]) if body else None
        except (ValueError, KeyError, TypeError):
            return None

    def primary_file(self) -> str | None:
        try:
            with open(os.path.join(self.mnt, ".primary")) as f:
                return f.read().strip()
        except OSError:
            return None

    def pos(self) -> str | None:
        try:
            with open(os.path.join(self.mnt, DB + "-pos")) as f:
                return f.read().strip()
        except OSError:
            return None

    def db(self) -> str:
        return os.path.join(self.mnt, DB)


def roles(nodes: list[Node]) -> tuple[Node, Node] | None:
    """(primary, replica) if exactly one node says it is primary and the other names it in
    .primary; else None."""
    if not all(n.running() for n in nodes):
        return None
    states = [n.is_primary() for n in nodes]
    if sorted(map(str, states)) != ["False", "True"]:
        return None
    primary, replica = (nodes[0], nodes[1]) if states[0] else (nodes[1], nodes[0])
    if replica.primary_file() != primary.hostname:
        return None
    return primary, replica


def wait_roles(nodes: list[Node], timeout: float) -> tuple[Node, Node]:
    found: list = []

    def settled() -> bool:
        for n in nodes:
            if n.proc is not None and not n.running():
                raise BenchError(f"{n.name} exited (status {n.proc.returncode}); log tail:\n"
                                 + tail(n.log, 30))
        r = roles(nodes)
        found[:] = [r] if r else []
        return bool(r)

    if not wait_until(settled, timeout, 0.05):
        detail = "; ".join(f"{n.name}: isPrimary={n.is_primary()} .primary={n.primary_file()!r}"
                           for n in nodes)
        raise BenchError(f"no stable primary/replica pair within {timeout:g} s ({detail})\n"
                         + "".join(f"--- {n.name} log tail ---\n{tail(n.log, 20)}" for n in nodes))
    return found[0]


def wait_caught_up(primary: Node, replica: Node, timeout: float) -> float:
    t0 = time.monotonic()
    if not wait_until(lambda: primary.pos() is not None and replica.pos() == primary.pos(),
                      timeout, 0.005):
        raise BenchError(f"{replica.name} at {replica.pos()}, primary {primary.name} at "
                         f"{primary.pos()} after {timeout:g} s\n--- {replica.name} log tail ---\n"
                         f"{tail(replica.log, 20)}")
    return time.monotonic() - t0


def count_rows(node: Node) -> int:
    conn = sqlite3.connect(f"file:{node.db()}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        conn.close()


def try_insert(path: str, value: bytes, timeout: float) -> str | None:
    """One INSERT on a new connection; None if it committed, else the error."""
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        try:
            conn.execute(INSERT_SQL, (value,))
        finally:
            conn.close()
        return None
    except sqlite3.Error as err:
        return str(err)


def failover(kind: str, primary: Node, survivor: Node, args) -> tuple[float | None, str]:
    """Signals the primary and writes on the survivor until a write commits. Returns (seconds
    from the signal to the commit, or None on timeout; a description of the attempts)."""
    name, sig = KINDS[kind]
    errors: collections.Counter[str] = collections.Counter()
    attempts = 0
    exited_at = None
    value = os.urandom(100)
    t0 = time.monotonic()
    os.kill(primary.proc.pid, sig)
    end = t0 + args.write_timeout
    t1 = None
    while time.monotonic() < end:
        attempts += 1
        err = try_insert(survivor.db(), value, args.busy_timeout)
        if err is None:
            t1 = time.monotonic()
            break
        errors[err] += 1
        if exited_at is None and primary.proc.poll() is not None:
            exited_at = time.monotonic() - t0
        time.sleep(args.pause)
    if exited_at is None and primary.proc.poll() is not None:
        exited_at = (t1 or time.monotonic()) - t0  # exited at the latest by then
    errs = ", ".join(f"{n} x {e!r}" for e, n in errors.most_common())
    text = f"{attempts} attempt(s)" + (f"; failed: {errs}" if errs else "")
    text += f"; old primary exited by +{exited_at:.2f} s" if exited_at is not None else "; old primary still running"
    return (t1 - t0 if t1 is not None else None), text


def effective_lease(binary: str, config: str) -> str:
    """The lease timings the node runs with, from `litefs-rs config` (every default filled in)."""
    try:
        out = subprocess.run([binary, "config", "-config", config], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "(litefs-rs config failed)"
    keys = ("ttl", "lock-delay", "reconnect-delay")
    found = [line.strip() for line in out.splitlines()
             if line.strip().split(":")[0] in keys]
    return ", ".join(found) or "(not in `litefs-rs config` output)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the litefs-rs binary")
    ap.add_argument("--consul-bin", required=True, help="the consul binary")
    ap.add_argument("--workdir", required=True, help="an empty directory (node-a/, node-b/, consul/)")
    ap.add_argument("--runs", type=int, default=10, help="runs per kind (default 10)")
    ap.add_argument("--kinds", default="term,kill", help="comma-separated: term (SIGTERM), kill (SIGKILL)")
    ap.add_argument("--write-timeout", type=float, default=60.0,
                    help="seconds after the signal without a committed write that fail a run (default 60)")
    ap.add_argument("--busy-timeout", type=float, default=0.05, help="sqlite3 connect timeout per attempt (default 0.05 s)")
    ap.add_argument("--pause", type=float, default=0.005, help="pause between write attempts (default 0.005 s)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to wait after the replica caught up, before the next signal (default 1)")
    ap.add_argument("--exit-timeout", type=float, default=10.0,
                    help="seconds a SIGKILLed node may take to exit (default 10)")
    ap.add_argument("--start-timeout", type=float, default=30.0, help="seconds a node may take to mount (default 30)")
    ap.add_argument("--role-timeout", type=float, default=60.0,
                    help="seconds for the cluster to settle on a primary and a replica (default 60)")
    ap.add_argument("--catch-up-timeout", type=float, default=60.0, help="seconds a replica may take to catch up (default 60)")
    ap.add_argument("--node-debug", action="store_true", help="run the nodes with --debug")
    ap.add_argument("--command", default="", help="the command line to print with the results")
    ap.add_argument("--note", default="", help="free text printed with the results (e.g. the build)")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(KINDS):
        ap.error("--kinds: choose from term, kill")
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if not os.path.isdir(args.workdir) or os.listdir(args.workdir):
        ap.error(f"--workdir must be an empty directory: {args.workdir}")

    # SIGTERM (e.g. from bench-failover.sh's trap) unwinds through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = os.path.abspath(args.workdir)
    binary = os.path.abspath(args.bin)
    consul = Consul(os.path.abspath(args.consul_bin), os.path.join(root, "consul"))
    ports = [p for p in free_ports(6) if p not in (consul.http, consul.lan, consul.wan, consul.server)][:2]
    extra = ["--debug"] if args.node_debug else []
    nodes = [Node(f"node-{c}", root, binary, p, consul.url, extra) for c, p in zip("ab", ports)]

    print(f"# litefs-rs failover benchmark  ({time.strftime('%Y-%m-%d %H:%M:%S')})")
    if args.command:
        print(f"command: {args.command}")
    if args.note:
        print(f"note: {args.note}")
    print(f"machine: nproc {os.cpu_count()}, kernel {platform.release()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"consul: {consul.version()}; nodes: " + ", ".join(f"{n.name} {n.hostname}" for n in nodes))
    print(f"lease (effective, `litefs-rs config`): {effective_lease(binary, nodes[0].config)}")
    print(f"runs per kind: {args.runs}  kinds: {','.join(KINDS[k][0] for k in kinds)}  "
          f"write attempt: new connection, timeout {args.busy_timeout:g} s, pause {args.pause * 1e3:g} ms; "
          f"settle {args.settle:g} s", flush=True)
    print()

    results: dict[str, list[float]] = {k: [] for k in kinds}
    problems: list[str] = []
    # ABBA (term, kill, kill, term, ...): as the roles alternate, each node gets both signals.
    schedule = [k for p in range(args.runs) for k in (kinds if p % 2 == 0 else kinds[::-1])]
    total = len(schedule)
    try:
        consul.start(30)
        for n in nodes:
            n.start(args.start_timeout)
            say(f"{n.name}: mounted at {n.mnt} (PID {n.proc.pid}, {n.hostname})")
        primary, replica = wait_roles(nodes, args.role_timeout)
        say(f"{primary.name} is primary, {replica.name} replicates it")
        conn = sqlite3.connect(primary.db(), isolation_level=None, timeout=5)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        for _ in range(5):
            conn.execute(INSERT_SQL, (os.urandom(100),))
        conn.close()
        rows = 5
        wait_caught_up(primary, replica, args.catch_up_timeout)
        say(f"{DB} created (WAL, {rows} rows); {replica.name} caught up at {replica.pos()}")
        print(flush=True)

        for i, kind in enumerate(schedule, 1):
            time.sleep(args.settle)
            name = KINDS[kind][0]
            label = f"run {i:2d}/{total} {name} {primary.name} -> {replica.name}"
            for n, role in ((primary, "primary, signalled"), (replica, "survivor")):
                n.mark(f"run {i}: {name} to the primary ({n.name} is the {role})")
            took, detail = failover(kind, primary, replica, args)
            if took is None:
                problems.append(f"{label}: no write committed within {args.write_timeout:g} s ({detail})")
                say(f"FAILED {label}: no write within {args.write_timeout:g} s; {detail}")
                for n in nodes:
                    say(f"--- {n.name} log tail ---\n{tail(n.log, 25)}")
            else:
                rows += 1
                results[kind].append(took)
                say(f"{label}: write committed after {took:6.3f} s  ({detail})")
            # Bring the stopped node back as a replica of the survivor.
            if kind == "kill":
                primary.stuck = ""
                status = primary.reap_killed(args.exit_timeout)
                if primary.stuck:
                    problems.append(f"{label}: {primary.stuck}")
            else:
                status = primary.reap(30)
                if status is None:
                    problems.append(f"{label}: {primary.name} still running 30 s after SIGTERM")
                    primary.stop()
            if status is None:
                raise BenchError(f"{primary.name} (PID {primary.proc.pid}) does not exit: "
                                 f"{threads_state(primary.proc.pid)}")
            if kind == "term" and status != 0:
                problems.append(f"{label}: {primary.name} exited with status {status} after SIGTERM")
                say(f"WARNING: {primary.name} exited with status {status}; log tail:\n{tail(primary.log, 20)}")
            if kind == "kill":
                primary.unmount_dead()
            t_restart = time.monotonic()
            primary.start(args.start_timeout)
            primary, replica = wait_roles(nodes, args.role_timeout)
            wait_caught_up(primary, replica, args.catch_up_timeout)
            counts = {n.name: count_rows(n) for n in nodes}
            if set(counts.values()) != {rows}:
                problems.append(f"{label}: row counts {counts}, expected {rows}")
                say(f"WARNING: row counts {counts}, expected {rows}")
            say(f"    restarted; {primary.name} primary, {replica.name} caught up at {replica.pos()} "
                f"{time.monotonic() - t_restart:.1f} s after the restart; {rows} rows on both")
    except BenchError as err:
        problems.append(f"aborted: {err}")
        say(f"ERROR: {err}")
    except KeyboardInterrupt:
        problems.append("interrupted")
    finally:
        print(flush=True)
        for n in nodes:
            status = n.stop()
            if n.proc is None and is_mounted(n.mnt):
                try:
                    n.unmount_dead()
                except BenchError as err:
                    problems.append(str(err))
            if status not in (None, 0) and n.starts:
                problems.append(f"{n.name}: exited with status {status} at the end")
        consul.stop()
        if _mounted_fusectl:
            subprocess.run(["umount", FUSECTL], check=False)

    print("## Results: time from the signal to the first committed write on the survivor (s)")
    if args.command:
        print(f"command: {args.command}")
    print(f"machine: nproc {os.cpu_count()}, kernel {platform.release()}; lease ttl {TTL_S:g} s, "
          f"lock-delay {LOCK_DELAY_S:g} s (defaults)")
    print()
    print(f"{'kind':8s} {'runs':>4s} {'median':>7s} {'min':>7s} {'max':>7s}")
    for k in kinds:
        xs = results[k]
        if xs:
            print(f"{KINDS[k][0]:8s} {len(xs):4d} {statistics.median(xs):7.2f} {min(xs):7.2f} {max(xs):7.2f}")
        else:
            print(f"{KINDS[k][0]:8s} {0:4d} {'-':>7s} {'-':>7s} {'-':>7s}")
    print()
    print("goal: SIGTERM < 1 s, SIGKILL < 13 s at the median")
    for k in kinds:
        xs = results[k]
        if xs:
            med = statistics.median(xs)
            print(f"  {KINDS[k][0]}: median {med:.2f} s < {REQUIRED_MEDIAN_S[k]:g} s: "
                  f"{'met' if med < REQUIRED_MEDIAN_S[k] else 'NOT met'}")
    print(f"issue's goals: SIGTERM < 0.3 s; SIGKILL within ttl + lock-delay + 1 s = {GOAL_S['kill']:g} s")
    for k in kinds:
        xs = results[k]
        if xs:
            med, mx = statistics.median(xs), max(xs)
            print(f"  {KINDS[k][0]}: median {med:.2f} s {'met' if med < GOAL_S[k] else 'NOT met'}, "
                  f"max {mx:.2f} s {'met' if mx < GOAL_S[k] else 'NOT met'}")
    if problems:
        print()
        print(f"FAILED: {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p.splitlines()[0]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
