#!/usr/bin/env python3
"""Replication benchmark: a litefs-rs primary and replicas on this machine (static lease).

Starts the nodes itself (a primary, then --replicas replicas following it over HTTP/2 on
127.0.0.1), and measures:

  rate        inserts/s on the primary with no replica running versus with every replica
              connected and following, on the same primary mount, alternated (ABBA);
  sequential  one autocommit INSERT at a time: the time from the commit returning on the
              primary to its TXID being visible in a replica's <db>-pos;
  burst       back-to-back autocommit INSERTs on one connection: the same lag per TXID.

Lag is observed by a separate poller process that reads the replica's <db>-pos by name
(open, read, close) in a tight loop and records the first CLOCK_MONOTONIC time each TXID
is visible; the writer records CLOCK_MONOTONIC when each commit returns. Standard library
only.

Usually started by scripts/bench-cluster.sh, which builds litefs-rs, gives this script a
fresh work dir and a private copy of the binary, and stops any node left running:

    python3 bench/cluster_bench.py --bin BIN --workdir DIR [--replicas 2] [...]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import random
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field

INSERT_SQL = "INSERT INTO t(v) VALUES (?)"
CREATE_SQL = "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"
VALUE_SIZE = 100

# (key, label, journal_mode, synchronous): LiteFS measured WAL with NORMAL, DELETE with FULL.
MODES = {
    "delete": ("DELETE, sync=FULL", "DELETE", "FULL"),
    "wal": ("WAL, sync=NORMAL", "WAL", "NORMAL"),
}

# Issue 5's numbers (ms, ms, fraction).
BURST_P99_GOAL_MS, BURST_P99_REQUIRED_MS = 20.0, 100.0
SEQ_P99_GOAL_MS = 3.0
RATE_COST_GOAL, RATE_COST_REQUIRED = 0.05, 0.15


def now_ns() -> int:
    """CLOCK_MONOTONIC: one clock for every process on the machine."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class BenchError(Exception):
    """A measurement could not be completed (SQL error, a replica did not catch up, ...)."""


# --- nodes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mounts_escape(path: str) -> str:
    """How /proc/self/mounts writes a path (octal escapes for space, tab, newline, backslash)."""
    return (path.replace("\\", "\\134").replace(" ", "\\040")
            .replace("\t", "\\011").replace("\n", "\\012"))


def is_mounted(path: str) -> bool:
    want = mounts_escape(path)
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split(" ")[1] == want for line in f if " " in line)
    except OSError:
        return False


def wait_until(cond, timeout: float, interval: float = 0.005) -> bool:
    """Polls cond() until it is true or `timeout` seconds passed; no fixed sleeps."""
    end = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


class Node:
    def __init__(self, name: str, root: str, binary: str, port: int, primary_port: int,
                 candidate: bool, compress: bool, extra_args: list[str]):
        self.name, self.binary, self.port = name, binary, port
        self.primary_port, self.candidate, self.compress = primary_port, candidate, compress
        self.extra_args = extra_args
        self.dir = os.path.join(root, name)
        self.mnt = os.path.join(self.dir, "mnt")
        self.data = os.path.join(self.dir, "data")
        self.config = os.path.join(self.dir, "litefs.yml")
        self.log = os.path.join(self.dir, "node.log")
        self.pidfile = os.path.join(self.dir, "pid")
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.exit_statuses: list[int | None] = []
        os.makedirs(self.mnt, exist_ok=True)
        os.makedirs(self.data, exist_ok=True)
        self.write_config()

    def write_config(self) -> None:
        # The same shape as tests/support/mount.rs write_config.
        yaml = (
            f'fuse:\n  dir: "{self.mnt}"\n'
            f'data:\n  dir: "{self.data}"\n  compress: {"true" if self.compress else "false"}\n'
            f'http:\n  addr: "127.0.0.1:{self.port}"\n'
            f'lease:\n  type: static\n  candidate: {"true" if self.candidate else "false"}\n'
            f'  hostname: "primary-{self.primary_port}"\n'
            f'  advertise-url: "http://127.0.0.1:{self.primary_port}"\n'
            f'  reconnect-delay: 100ms\n'
        )
        with open(self.config, "w") as f:
            f.write(yaml)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float) -> None:
        self.starts += 1
        with open(self.log, "a") as log:
            log.write(f"=== start {self.starts} ===\n")
            log.flush()
            env = dict(os.environ, NO_COLOR="1")
            # Own process group: a Ctrl-C reaches this script, which stops the nodes in order.
            self.proc = subprocess.Popen(
                [self.binary, "mount", "-config", self.config, *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
        with open(self.pidfile, "w") as f:
            f.write(f"{self.proc.pid}\n")
        if not wait_until(lambda: not self.running() or is_mounted(self.mnt), timeout, 0.02) \
                or not is_mounted(self.mnt):
            state = f"exited with status {self.proc.returncode}" if not self.running() \
                else f"still starting after {timeout:g} s"
            raise BenchError(f"{self.name}: the mount did not come up ({state}); log tail:\n"
                             + self.log_tail(30))
        log_say(f"{self.name}: mounted at {self.mnt} (PID {self.proc.pid}, port {self.port})")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait; lazy unmount if still mounted after a deadline. Returns the exit
        status (None if the process did not exit)."""
        status = None
        if self.proc is not None:
            if self.proc.poll() is None:
                log_say(f"{self.name}: stopping (SIGTERM to PID {self.proc.pid})")
                try:
                    self.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log_say(f"WARNING: {self.name}: PID {self.proc.pid} still running "
                            f"{timeout:.0f} s after SIGTERM")
            status = self.proc.poll()
            self.exit_statuses.append(status)
            if status is not None:
                log_say(f"{self.name}: exited with status {status}")
                if status != 0:
                    log_say(f"WARNING: {self.name}: did not exit cleanly; log tail:\n"
                            + self.log_tail(30))
                self.proc = None
                try:
                    os.unlink(self.pidfile)
                except OSError:
                    pass
        if is_mounted(self.mnt) and not wait_until(lambda: not is_mounted(self.mnt), 10, 0.05):
            log_say(f"WARNING: {self.name}: {self.mnt} still mounted; fusermount3 -u -z")
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], check=False)
        return status

    def log_tail(self, n: int) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError as err:
            return f"(no log: {err})"

    def db(self, name: str) -> str:
        return os.path.join(self.mnt, name)


def read_pos(node: Node, db: str) -> tuple[int, int]:
    """(TXID, checksum) from <db>-pos, (0, 0) while the database does not exist there."""
    try:
        with open(node.db(db) + "-pos", "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return (0, 0)
    txid, _, chk = text.strip().partition(b"/")
    return (int(txid, 16), int(chk, 16))


def wait_caught_up(primary: Node, replicas: list[Node], dbs: list[str], timeout: float) -> float:
    """Waits until every replica has each database at the primary's position (TXID and
    checksum). Returns the seconds it took; raises BenchError at the deadline."""
    t0 = time.monotonic()
    end = t0 + timeout
    for db in dbs:
        want = read_pos(primary, db)
        for r in replicas:
            while True:
                have = read_pos(r, db)
                if have == want:
                    break
                if not r.running():
                    raise BenchError(f"{r.name} exited (status {r.proc.returncode if r.proc else '?'}) "
                                     f"while catching up on {db}; log tail:\n{r.log_tail(30)}")
                if time.monotonic() >= end:
                    raise BenchError(
                        f"{db}: {r.name} at {have[0]:016x}/{have[1]:016x}, primary at "
                        f"{want[0]:016x}/{want[1]:016x} after {timeout:g} s\n"
                        f"--- {r.name} log tail ---\n{r.log_tail(25)}"
                        f"--- primary log tail ---\n{primary.log_tail(25)}")
                time.sleep(0.001)
    return time.monotonic() - t0


def primary_dbs(primary: Node) -> list[str]:
    return sorted(n for n in os.listdir(primary.mnt) if n.endswith(".db"))


def log_say(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- where the CPU goes ------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads, exited ones included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_s() -> float:
    """CPU seconds spent not idle (nor iowait) by the whole machine, every tenant included."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / _TICK


class CpuSnap:
    """CPU seconds of each node, of this script's process (the writer) and of the machine."""

    def __init__(self, ctx):
        self.t = time.monotonic()
        self.by: dict[str, float] = {}
        for node in [ctx.primary, *ctx.replicas]:
            if node.running():
                c = proc_cpu_s(node.proc.pid)
                if c is not None:
                    self.by[node.name] = c
        t = os.times()
        self.by["writer"] = t.user + t.system
        self.machine = machine_busy_s()

    def since(self, before: "CpuSnap") -> dict[str, float]:
        """CPU seconds per name between two snapshots, plus 'machine' and 'wall'."""
        out = {k: v - before.by[k] for k, v in self.by.items() if k in before.by}
        out["machine"] = self.machine - before.machine
        out["wall"] = self.t - before.t
        return out


def fmt_cpu(d: dict[str, float], per: int) -> str:
    """'primary 812 µs, replica1 301 µs, ... per insert; machine busy 1.9 of 2 CPUs'."""
    names = [k for k in d if k not in ("machine", "wall")]
    parts = [f"{k} {d[k] / per * 1e6:,.0f}" for k in names]
    text = ", ".join(parts) + " µs CPU/insert"
    if d["wall"] > 0:
        text += f"; machine busy {d['machine'] / d['wall']:.2f} of {os.cpu_count() or 1} CPUs"
    return text


# --- the poller --------------------------------------------------------------------------

_MSG = struct.Struct("<QQ")  # txid, t_ns


def poller_main(pos_path: str, stop_flag, last_seen, notify_conn, notify_all: bool,
                result_conn, interval_s: float, parent_pid: int) -> None:
    """Reads pos_path (open, read, close) in a loop until stop_flag is set. For each read that
    shows a TXID above the last one seen, every TXID in between is first seen then; last_seen
    holds the highest TXID seen. The first message on notify_conn, (txid, t_ns), is the
    starting position, so the writer knows polling has begun; with notify_all every new TXID
    seen is sent too (the sequential writer blocks on it).
    At the end sends (observations, polls, errors, first_error, cpu_seconds, elapsed_ns) on
    result_conn: observations are (txid, t_before_read_ns, t_after_read_ns) per new TXID seen.
    """
    # Ctrl-C reaches the benchmark, which stops this poller; die with the benchmark, even if
    # it is killed with SIGKILL (PR_SET_PDEATHSIG).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        return
    obs: list[tuple[int, int, int]] = []
    polls = errors = 0
    first_error = ""
    last = -1
    t_begin = now_ns()
    clock = time.clock_gettime_ns
    mono = time.CLOCK_MONOTONIC
    o_rdonly = os.O_RDONLY
    while not stop_flag.value:
        t_a = clock(mono)
        try:
            fd = os.open(pos_path, o_rdonly)
            try:
                data = os.read(fd, 64)
            finally:
                os.close(fd)
            txid = int(data[:16], 16)
        except FileNotFoundError:
            txid = 0
        except (OSError, ValueError) as err:
            errors += 1
            if not first_error:
                first_error = f"{type(err).__name__}: {err}"
            continue
        t_b = clock(mono)
        polls += 1
        if txid != last:
            if txid > last:
                obs.append((txid, t_a, t_b))
                last_seen.value = txid
                if notify_all or last == -1:
                    notify_conn.send_bytes(_MSG.pack(txid, t_b))
            else:  # went backwards: should never happen on a follower
                errors += 1
                if not first_error:
                    first_error = f"position went back from {last} to {txid}"
            last = txid
        if interval_s:
            time.sleep(interval_s)
    t = os.times()
    result_conn.send((obs, polls, errors, first_error, t.user + t.system, now_ns() - t_begin))


class Poller:
    def __init__(self, node: Node, db: str, notify_all: bool, interval_s: float):
        # spawn, not fork: a fresh interpreter that holds none of the writer's open files
        # (a forked poller would keep the primary's database open).
        ctx = multiprocessing.get_context("spawn")
        self.stop_flag = ctx.RawValue("b", 0)
        self.last_seen = ctx.RawValue("Q", 0)
        self.notify_recv, notify_send = ctx.Pipe(duplex=False)
        self.result_recv, result_send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=poller_main, daemon=True,
                                args=(node.db(db) + "-pos", self.stop_flag, self.last_seen,
                                      notify_send, notify_all, result_send, interval_s,
                                      os.getpid()))
        self.proc.start()
        notify_send.close()
        result_send.close()
        self.start_txid: int | None = None
        self.result = None

    def wait_started(self, timeout: float = 10.0) -> int:
        """The replica's TXID when polling began."""
        if not self.notify_recv.poll(timeout):
            raise BenchError("the poller did not start")
        self.start_txid = _MSG.unpack(self.notify_recv.recv_bytes())[0]
        return self.start_txid

    def wait_txid(self, txid: int, timeout: float) -> None:
        """With notify_all: blocks until the poller has seen `txid` (or more)."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not self.notify_recv.poll(left):
                raise BenchError(f"TXID {txid} not seen on the replica after {timeout:g} s")
            seen, _ = _MSG.unpack(self.notify_recv.recv_bytes())
            if seen >= txid:
                return

    def wait_last_seen(self, txid: int, timeout: float) -> None:
        """Without notify_all: polls last_seen (1 ms steps) until it reaches `txid`."""
        if not wait_until(lambda: self.last_seen.value >= txid, timeout, 0.001):
            raise BenchError(f"TXID {txid} not seen on the replica after {timeout:g} s "
                             f"(last seen {self.last_seen.value})")

    def stop(self):
        self.stop_flag.value = 1
        try:
            if self.result_recv.poll(30):
                self.result = self.result_recv.recv()
        except (EOFError, OSError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.result is None:
            raise BenchError("the poller sent no result")
        return self.result


def first_seen(obs: list[tuple[int, int, int]]) -> tuple[dict[int, int], dict[int, int]]:
    """TXID -> first time visible (end of the read that showed it, and its start)."""
    seen_end: dict[int, int] = {}
    seen_start: dict[int, int] = {}
    prev = None
    for txid, t_a, t_b in obs:
        lo = txid if prev is None else prev + 1
        for x in range(lo, txid + 1):
            seen_end[x] = t_b
            seen_start[x] = t_a
        prev = txid
    return seen_end, seen_start


# --- SQL helpers -------------------------------------------------------------------------


def connect(path: str) -> sqlite3.Connection:
    try:
        return sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as err:
        raise BenchError(f"sqlite3.connect({path!r}): {describe(err)}") from err


def describe(err: BaseException) -> str:
    code = getattr(err, "sqlite_errorname", None)
    return f"{type(err).__name__}: {err}" + (f" [{code}]" if code else "")


def run_sql(conn: sqlite3.Connection, db: str, stmt: str, params=()):
    try:
        return conn.execute(stmt, params).fetchall()
    except sqlite3.Error as err:
        raise BenchError(f"{db}: {describe(err)} -- statement: {stmt!r}") from err


def new_db(primary: Node, db: str, mode: str) -> sqlite3.Connection:
    _, journal_mode, synchronous = MODES[mode]
    conn = connect(primary.db(db))
    got = run_sql(conn, db, f"PRAGMA journal_mode={journal_mode}")[0][0]
    if got.lower() != journal_mode.lower():
        raise BenchError(f"{db}: journal_mode is {got!r}, wanted {journal_mode!r}")
    run_sql(conn, db, f"PRAGMA synchronous={synchronous}")
    run_sql(conn, db, CREATE_SQL)
    return conn


def verify(node: Node, db: str, rows: int) -> list[str]:
    """Row count and integrity_check on a fresh connection; problems as strings."""
    try:
        conn = sqlite3.connect(node.db(db), isolation_level=None)
        try:
            n = conn.execute("SELECT count(*) FROM t").fetchone()[0]
            ic = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as err:
        return [f"{node.name}: {db}: verification failed: {describe(err)}"]
    problems = []
    if n != rows:
        problems.append(f"{node.name}: {db}: row count {n}, expected {rows}")
    if ic != ["ok"]:
        problems.append(f"{node.name}: {db}: integrity_check: {'; '.join(ic[:5])}")
    return problems


# --- measurements ------------------------------------------------------------------------


@dataclass
class LagResult:
    kind: str  # "sequential" | "burst"
    mode: str
    n: int = 0
    lags_ms: list[float] = field(default_factory=list)  # commit return -> end of the read that saw it
    lags_lo_ms: list[float] = field(default_factory=list)  # ... -> start of that read (lower bound)
    polls: int = 0
    poll_elapsed_s: float = 0.0
    poll_cpu_s: float = 0.0
    poll_errors: int = 0
    poll_first_error: str = ""
    distinct_obs: int = 0
    write_rate: float | None = None  # burst: inserts/s on the primary during the burst
    cpu: dict[str, float] | None = None  # burst: CPU seconds per process, loop start to last TXID seen
    drain_ms: float | None = None  # burst: last commit -> last TXID seen on the replica
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class RateResult:
    mode: str
    n: int
    base: list[float] = field(default_factory=list)  # inserts/s, no replica running
    repl: list[float] = field(default_factory=list)  # inserts/s, replicas following
    drain_ms: list[float] = field(default_factory=list)  # last commit -> all replicas caught up
    cpu_base: list[dict[str, float]] = field(default_factory=list)  # CPU seconds per process, per run
    cpu_repl: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[k - 1]


def not_seen(ctx, db: str, err: BenchError) -> BenchError:
    """A replica that did not show a TXID in time: both positions and the logs' tails."""
    p = read_pos(ctx.primary, db)
    lines = [f"{db}: {err}; primary at {p[0]:016x}/{p[1]:016x}"]
    for r in ctx.replicas:
        q = read_pos(r, db)
        lines.append(f"{r.name} at {q[0]:016x}/{q[1]:016x} ({'running' if r.running() else 'exited'})")
    text = ", ".join(lines)
    for node in (ctx.replicas[0], ctx.primary):
        text += f"\n--- {node.name} log tail ---\n{node.log_tail(25)}"
    return BenchError(text)


def measure_sequential(ctx, mode: str, n: int) -> LagResult:
    res = LagResult("sequential", mode, n)
    primary, replicas, observed = ctx.primary, ctx.replicas, ctx.replicas[0]
    db = f"seq-{mode}-{ctx.run_id}.db"
    conn = new_db(primary, db, mode)
    try:
        wait_caught_up(primary, replicas, [db], ctx.args.catch_up_timeout)
        values = [ctx.rng.randbytes(VALUE_SIZE) for _ in range(n)]
        poller = Poller(observed, db, notify_all=True, interval_s=ctx.poll_interval_s)
        commits: dict[int, int] = {}
        try:
            poller.wait_started()
            cur = conn.cursor()
            for i, v in enumerate(values):
                try:
                    cur.execute(INSERT_SQL, (v,))
                except sqlite3.Error as err:
                    raise BenchError(f"{db}: insert #{i + 1}: {describe(err)}") from err
                t = now_ns()
                txid = read_pos(primary, db)[0]  # after the timestamp: not in the lag
                if txid in commits:
                    raise BenchError(f"{db}: insert #{i + 1} did not advance the primary's TXID ({txid:x})")
                commits[txid] = t
                try:
                    poller.wait_txid(txid, ctx.args.catch_up_timeout)
                except BenchError as err:
                    raise not_seen(ctx, db, err) from err
        finally:
            obs, polls, errors, first_error, cpu, elapsed = poller.stop()
        seen_end, seen_start = first_seen(obs)
        for txid, t in commits.items():
            res.lags_ms.append((seen_end[txid] - t) / 1e6)
            res.lags_lo_ms.append((seen_start[txid] - t) / 1e6)
        res.polls, res.poll_errors, res.poll_first_error = polls, errors, first_error
        res.poll_cpu_s, res.poll_elapsed_s, res.distinct_obs = cpu, elapsed / 1e9, len(obs)
    finally:
        conn.close()
    wait_caught_up(primary, replicas, [db], ctx.args.catch_up_timeout)
    for r in replicas:
        res.warnings += verify(r, db, n)
    return res


def measure_burst(ctx, mode: str, n: int) -> LagResult:
    res = LagResult("burst", mode, n)
    primary, replicas, observed = ctx.primary, ctx.replicas, ctx.replicas[0]
    db = f"burst-{mode}-{ctx.run_id}.db"
    conn = new_db(primary, db, mode)
    try:
        wait_caught_up(primary, replicas, [db], ctx.args.catch_up_timeout)
        values = [ctx.rng.randbytes(VALUE_SIZE) for _ in range(n)]
        start_txid = read_pos(primary, db)[0]
        t_commit = [0] * n
        poller = Poller(observed, db, notify_all=False, interval_s=ctx.poll_interval_s)
        try:
            poller.wait_started()
            cur = conn.cursor()
            i = 0
            try:
                c0 = CpuSnap(ctx)
                t0 = now_ns()
                for i, v in enumerate(values):
                    cur.execute(INSERT_SQL, (v,))
                    t_commit[i] = now_ns()
            except sqlite3.Error as err:
                raise BenchError(f"{db}: insert #{i + 1} of {n}: {describe(err)}") from err
            res.write_rate = n / ((t_commit[-1] - t0) / 1e9)
            end_txid = read_pos(primary, db)[0]
            if end_txid != start_txid + n:
                raise BenchError(f"{db}: primary TXID went from {start_txid} to {end_txid} over "
                                 f"{n} autocommit inserts (expected +{n}): TXID mapping invalid")
            try:
                poller.wait_last_seen(end_txid, ctx.args.catch_up_timeout)
            except BenchError as err:
                raise not_seen(ctx, db, err) from err
            res.cpu = CpuSnap(ctx).since(c0)
        finally:
            obs, polls, errors, first_error, cpu, elapsed = poller.stop()
        seen_end, seen_start = first_seen(obs)
        for i in range(n):
            txid = start_txid + 1 + i
            res.lags_ms.append((seen_end[txid] - t_commit[i]) / 1e6)
            res.lags_lo_ms.append((seen_start[txid] - t_commit[i]) / 1e6)
        res.drain_ms = (seen_end[start_txid + n] - t_commit[-1]) / 1e6
        res.polls, res.poll_errors, res.poll_first_error = polls, errors, first_error
        res.poll_cpu_s, res.poll_elapsed_s, res.distinct_obs = cpu, elapsed / 1e9, len(obs)
    finally:
        conn.close()
    wait_caught_up(primary, replicas, [db], ctx.args.catch_up_timeout)
    for r in replicas:
        res.warnings += verify(r, db, n)
    return res


def rate_run(ctx, mode: str, n: int, side: str, rep: int, values: list[bytes]) -> tuple[float, float | None, list[str], dict[str, float]]:
    """One timed run of n autocommit inserts into a fresh database. side 'repl': the
    replicas are running and have the new database before the loop starts."""
    primary = ctx.primary
    db = f"rate-{mode}-{side}-{rep}-{ctx.run_id}.db"
    conn = new_db(primary, db, mode)
    try:
        if side == "repl":
            wait_caught_up(primary, ctx.replicas, [db], ctx.args.catch_up_timeout)
        cur = conn.cursor()
        i = 0
        try:
            c0 = CpuSnap(ctx)
            t0 = time.perf_counter()
            for i, v in enumerate(values):
                cur.execute(INSERT_SQL, (v,))
            t1 = time.perf_counter()
            cpu = CpuSnap(ctx).since(c0)
        except sqlite3.Error as err:
            raise BenchError(f"{db}: insert #{i + 1} of {n}: {describe(err)}") from err
    finally:
        conn.close()
    drain = None
    problems = verify(primary, db, n)
    if side == "repl":
        drain = wait_caught_up(primary, ctx.replicas, [db], ctx.args.catch_up_timeout) * 1e3
        for r in ctx.replicas:
            problems += verify(r, db, n)
    return n / (t1 - t0), drain, problems, cpu


def set_replicas(ctx, running: bool) -> None:
    for r in ctx.replicas:
        if running and not r.running():
            r.start(ctx.args.start_timeout)
        elif not running and r.running():
            r.stop()
    if running:
        took = wait_caught_up(ctx.primary, ctx.replicas, primary_dbs(ctx.primary), ctx.args.catch_up_timeout)
        log_say(f"replicas caught up on {len(primary_dbs(ctx.primary))} database(s) in {took:.2f} s")


# --- reporting ---------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def df_line(path: str) -> str:
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True, check=True).stdout
        parts = out.strip().splitlines()[-1].split()
        return f"{parts[1]} ({parts[0]}, mounted on {parts[-1]})"
    except (OSError, subprocess.CalledProcessError, IndexError) as err:
        return f"unknown ({err})"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def verdict_ms(p99: float, goal: float, required: float | None) -> str:
    if p99 < goal:
        return "meets goal"
    if required is not None and p99 < required:
        return "**misses goal**, meets required"
    return "**misses goal**" if required is None else "**misses required**"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the litefs-rs binary")
    ap.add_argument("--workdir", required=True, help="an empty directory for the nodes (one subdirectory each)")
    ap.add_argument("--replicas", type=int, default=2, help="replicas for the rate and lag runs (default 2)")
    ap.add_argument("--compress", choices=("true", "false"), default="true", help="data.compress (default true)")
    ap.add_argument("--modes", default="delete,wal", help="comma-separated: delete (DELETE, sync=FULL), wal (WAL, sync=NORMAL)")
    ap.add_argument("--only", default="rate,sequential,burst", help="comma-separated: rate,sequential,burst (default all)")
    ap.add_argument("--seq-inserts", type=int, default=500, help="sequential inserts per mode (default 500)")
    ap.add_argument("--burst-inserts", type=int, default=2000, help="back-to-back inserts per burst (default 2000)")
    ap.add_argument("--rate-inserts", type=int, default=2000, help="inserts per DELETE-mode write-rate run (default 2000)")
    ap.add_argument("--rate-inserts-wal", type=int, default=10000,
                    help="inserts per WAL-mode write-rate run (default 10000: WAL commits are ~30 times faster, "
                         "and a run of a fraction of a second is mostly noise)")
    ap.add_argument("--rate-repeat", type=int, default=3, help="write-rate runs per side and mode, alternated ABBA (default 3); medians reported")
    ap.add_argument("--poll-interval-us", type=float, default=0.0, help="pause between reads of the replica's -pos (default 0: tight loop)")
    ap.add_argument("--catch-up-timeout", type=float, default=60.0, help="seconds a replica may take to catch up (default 60)")
    ap.add_argument("--start-timeout", type=float, default=30.0, help="seconds a node may take to mount (default 30)")
    ap.add_argument("--node-debug", action="store_true", help="run the nodes with --debug")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--command", default="", help="the command line to print with the results")
    ap.add_argument("--note", default="", help="free text printed with the results (e.g. the build)")
    args = ap.parse_args()

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        ap.error(f"--modes: choose from {', '.join(MODES)}")
    only = [m.strip() for m in args.only.split(",") if m.strip()]
    if not only or set(only) - {"rate", "sequential", "burst"}:
        ap.error("--only: choose from rate, sequential, burst")
    if args.replicas < 1:
        ap.error("--replicas must be at least 1")
    if args.rate_repeat < 1:
        ap.error("--rate-repeat must be at least 1")
    if min(args.seq_inserts, args.burst_inserts, args.rate_inserts, args.rate_inserts_wal) < 1:
        ap.error("insert counts must be at least 1")
    # Empty, or holding only empty directories: file systems prepared for the nodes.
    if not os.path.isdir(args.workdir) or any(
            not os.path.isdir(os.path.join(args.workdir, e)) or os.listdir(os.path.join(args.workdir, e))
            for e in os.listdir(args.workdir)):
        ap.error(f"--workdir must be an empty directory (or hold only empty ones): {args.workdir}")

    # SIGTERM (e.g. from bench-cluster.sh's trap) unwinds through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    workdir = os.path.abspath(args.workdir)
    binary = os.path.abspath(args.bin)
    compress = args.compress == "true"
    extra = ["--debug"] if args.node_debug else []
    pport = free_port()
    ports = {pport}
    primary = Node("primary", workdir, binary, pport, pport, True, compress, extra)
    replicas = []
    for k in range(args.replicas):
        port = free_port()
        while port in ports:
            port = free_port()
        ports.add(port)
        replicas.append(Node(f"replica{k + 1}", workdir, binary, port, pport, False, compress, extra))

    ctx = types.SimpleNamespace(
        args=args, primary=primary, replicas=replicas, rng=random.Random(args.seed),
        run_id=time.strftime("%H%M%S"), poll_interval_s=args.poll_interval_us / 1e6,
    )

    print(f"# litefs-rs replication benchmark  ({time.strftime('%Y-%m-%d %H:%M:%S')})")
    if args.command:
        print(f"command: {args.command}")
    if args.note:
        print(f"note: {args.note}")
    print(f"nodes: primary 127.0.0.1:{pport}, " + ", ".join(f"{r.name} 127.0.0.1:{r.port}" for r in replicas)
          + f"; work dir {workdir}  [{df_line(workdir)}]")
    print(f"modes={','.join(modes)}  only={','.join(only)}  replicas={args.replicas}  "
          f"rate-inserts={args.rate_inserts} (WAL {args.rate_inserts_wal})x{args.rate_repeat}  seq-inserts={args.seq_inserts}  "
          f"burst-inserts={args.burst_inserts}  poll-interval-us={args.poll_interval_us:g}  "
          f"load average at start: {loadavg()}")
    print(flush=True)

    rate_n = {"delete": args.rate_inserts, "wal": args.rate_inserts_wal}
    rates = {m: RateResult(m, rate_n[m]) for m in modes}
    lags: list[LagResult] = []
    failures: list[str] = []
    t_start = time.perf_counter()
    nodes = [primary, *replicas]
    try:
        primary.start(args.start_timeout)

        if "rate" in only:
            print("## Write rate on the primary: no replica vs replicas following", flush=True)
            # ABBA: base, repl | repl, base | base, repl ...: drifts of the machine hit both
            # sides, and replicas start or stop only between blocks.
            blocks: list[tuple[str, int]] = []
            for rep in range(args.rate_repeat):
                order = ("base", "repl") if rep % 2 == 0 else ("repl", "base")
                blocks += [(side, rep) for side in order]
            values = {m: [ctx.rng.randbytes(VALUE_SIZE) for _ in range(rate_n[m])] for m in modes}
            for side, rep in blocks:
                try:
                    set_replicas(ctx, side == "repl")
                except BenchError as err:
                    failures.append(f"[rate] starting/stopping replicas: {err}")
                    print(f"  ERROR: {err}", flush=True)
                    break
                for m in modes:
                    rr = rates[m]
                    if rr.error:
                        continue
                    try:
                        ops, drain, problems, cpu = rate_run(ctx, m, rr.n, side, rep, values[m])
                    except BenchError as err:
                        rr.error = str(err)
                        failures.append(f"[rate {m}] {err}")
                        print(f"  ERROR: {err}", flush=True)
                        continue
                    (rr.base if side == "base" else rr.repl).append(ops)
                    (rr.cpu_base if side == "base" else rr.cpu_repl).append(cpu)
                    if drain is not None:
                        rr.drain_ms.append(drain)
                    rr.warnings += problems
                    for p in problems:
                        print(f"  WARNING: {p}", flush=True)
                    label = "no replica " if side == "base" else f"{len(replicas)} replicas"
                    extra_txt = f"  (replicas caught up {drain:.0f} ms after the loop)" if drain is not None else ""
                    print(f"  rep {rep + 1}/{args.rate_repeat} {MODES[m][0]:17s} {label}: "
                          f"{ops:9,.0f} inserts/s  {1e6 / ops:8.1f} µs/insert{extra_txt}", flush=True)
                    print(f"      {fmt_cpu(cpu, rr.n)}", flush=True)
            print(flush=True)

        if "sequential" in only or "burst" in only:
            set_replicas(ctx, True)
            for kind in ("sequential", "burst"):
                if kind not in only:
                    continue
                print(f"## {kind.capitalize()} lag (observed on {replicas[0].name}; "
                      f"{len(replicas)} replica(s) following)", flush=True)
                for m in modes:
                    try:
                        if kind == "sequential":
                            r = measure_sequential(ctx, m, args.seq_inserts)
                        else:
                            r = measure_burst(ctx, m, args.burst_inserts)
                    except BenchError as err:
                        r = LagResult(kind, m, error=str(err))
                        failures.append(f"[{kind} {m}] {err}")
                        print(f"  ERROR: {err}", flush=True)
                    lags.append(r)
                    for p in r.warnings:
                        print(f"  WARNING: {p}", flush=True)
                    if r.lags_ms:
                        extra_txt = ""
                        if r.write_rate is not None:
                            extra_txt = f", primary {r.write_rate:,.0f} inserts/s during the burst"
                        print(f"  {MODES[m][0]:17s} n={len(r.lags_ms)}: p50 {pct(r.lags_ms, 50):.2f} ms  "
                              f"p99 {pct(r.lags_ms, 99):.2f} ms  max {max(r.lags_ms):.2f} ms  "
                              f"({r.polls / r.poll_elapsed_s:,.0f} polls/s{extra_txt})", flush=True)
                print(flush=True)
    except BenchError as err:
        failures.append(str(err))
        print(f"ERROR: {err}", flush=True)
    finally:
        for node in reversed(nodes):
            node.stop()
    total = time.perf_counter() - t_start

    for node in nodes:
        bad = [s for s in node.exit_statuses if s != 0]
        if bad:
            failures.append(f"{node.name} exit status(es) {node.exit_statuses} (0 expected)")

    # --- report ---
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("## Results")
    print()
    if args.command:
        print(f"- command: `{args.command}`")
    print(f"- SQLite {sqlite3.sqlite_version} (Python {platform.python_version()} sqlite3 module), "
          f"{VALUE_SIZE}-byte values, table `{CREATE_SQL}`, single-row autocommit INSERTs, one connection")
    print(f"- nproc {nproc}, {cpu_model()}, kernel {platform.release()}, load average at the end {loadavg()}")
    fs = sorted({df_line(n.data) for n in nodes})
    where = fs[0] if len(fs) == 1 else "one file system each: " + ", ".join(fs)
    print(f"- every node on this machine and disk ({where}); replicas reach the primary "
          f"over HTTP/2 on 127.0.0.1; data.compress={args.compress}")
    print(f"- benchmark time {total:.1f} s (node starts and catch-up waits included)")
    if args.note:
        print(f"- {args.note}")
    print()

    if "rate" in only:
        print(f"Write rate on the primary (median inserts/s of {args.rate_repeat} runs per side, "
              + ", ".join(f"{rate_n[m]} inserts each in {MODES[m][1]} mode" for m in modes)
              + ", fresh database per run, ABBA order). "
              + f"**Goal: cost < {RATE_COST_GOAL:.0%} (required < {RATE_COST_REQUIRED:.0%}) with two replicas.**")
        print()
        print(f"| workload | no replica ins/s | {len(replicas)} replicas ins/s | ratio | cost | goal < {RATE_COST_GOAL:.0%} / required < {RATE_COST_REQUIRED:.0%} |")
        print("|---|---:|---:|---:|---:|---|")
        for m in modes:
            rr = rates[m]
            b = statistics.median(rr.base) if rr.base else None
            p = statistics.median(rr.repl) if rr.repl else None
            if b and p:
                ratio = p / b
                cost = 1 - ratio
                v = "meets goal" if cost < RATE_COST_GOAL else (
                    "**misses goal**, meets required" if cost < RATE_COST_REQUIRED else "**misses required**")
                if len(replicas) != 2:
                    v += f" (goal is for 2 replicas; ran {len(replicas)})"
                print(f"| {MODES[m][0]} | {b:,.0f} | {p:,.0f} | {ratio:.3f} | {cost:+.1%} | {v} |")
            else:
                print(f"| {MODES[m][0]} | {'—' if b is None else f'{b:,.0f}'} | {'—' if p is None else f'{p:,.0f}'} | "
                      f"{'FAILED' if rr.error else '—'} | — | — |")
        print()
        print("Spread (min–max inserts/s) and replica catch-up after each replicated run:")
        for m in modes:
            rr = rates[m]
            parts = []
            if rr.base:
                parts.append(f"no replica {min(rr.base):,.0f}–{max(rr.base):,.0f}")
            if rr.repl:
                parts.append(f"{len(replicas)} replicas {min(rr.repl):,.0f}–{max(rr.repl):,.0f}")
            if rr.drain_ms:
                parts.append("caught up " + ", ".join(f"{d:.0f}" for d in rr.drain_ms) + " ms after the last commit")
            print(f"- {MODES[m][0]}: " + ("; ".join(parts) if parts else "no data"))
        print()
        print("Where the CPU went during the timed loops (median per process over the runs; "
              "`writer` is this script's process, machine busy counts every tenant):")
        for m in modes:
            rr = rates[m]
            for label, runs in (("no replica", rr.cpu_base), (f"{len(replicas)} replicas", rr.cpu_repl)):
                if not runs:
                    continue
                keys = [k for k in runs[0] if all(k in r for r in runs)]
                medcpu = {k: statistics.median(r[k] for r in runs) for k in keys}
                print(f"- {MODES[m][0]}, {label}: {fmt_cpu(medcpu, rates[m].n)}")
        print()

    if lags:
        print(f"Replication lag: commit returning on the primary → TXID visible in {replicas[0].name}'s "
              f"`<db>-pos` ({len(replicas)} replica(s) following). "
              f"**Goals: sequential p99 < {SEQ_P99_GOAL_MS:g} ms; burst p99 < {BURST_P99_GOAL_MS:g} ms "
              f"(required < {BURST_P99_REQUIRED_MS:g} ms).**")
        print()
        print("| measurement | mode | rows | p50 ms | p99 ms | max ms | goal | verdict (p99) |")
        print("|---|---|---:|---:|---:|---:|---|---|")
        for r in lags:
            if r.kind == "sequential":
                goal_txt, goal, req = f"p99 < {SEQ_P99_GOAL_MS:g} ms", SEQ_P99_GOAL_MS, None
            else:
                goal_txt = f"p99 < {BURST_P99_GOAL_MS:g} ms (required < {BURST_P99_REQUIRED_MS:g})"
                goal, req = BURST_P99_GOAL_MS, BURST_P99_REQUIRED_MS
            if r.lags_ms:
                p99 = pct(r.lags_ms, 99)
                print(f"| {r.kind} lag | {MODES[r.mode][0]} | {len(r.lags_ms):,} | {pct(r.lags_ms, 50):.2f} | "
                      f"{p99:.2f} | {max(r.lags_ms):.2f} | {goal_txt} | {verdict_ms(p99, goal, req)} |")
            else:
                print(f"| {r.kind} lag | {MODES[r.mode][0]} | — | — | — | — | {goal_txt} | FAILED |")
        print()
        print("Lag details (resolution: one read of `-pos` by name, open+read+close; the lag is "
              "measured to the end of the read that first showed the TXID, the lower bound to its "
              "start; a read that waits for an apply in progress makes the two differ):")
        for r in lags:
            if not r.lags_ms:
                continue
            period_us = r.poll_elapsed_s / r.polls * 1e6 if r.polls else float("nan")
            line = (f"- {r.kind} {MODES[r.mode][0]}: lower bound p50 {pct(r.lags_lo_ms, 50):.2f} / "
                    f"p99 {pct(r.lags_lo_ms, 99):.2f} ms; min {min(r.lags_ms):.2f} ms; "
                    f"poller {r.polls:,} reads, {period_us:.0f} µs per read, "
                    f"{r.poll_cpu_s / r.poll_elapsed_s:.0%} of a CPU; "
                    f"{r.distinct_obs:,} distinct positions seen for {r.n:,} TXIDs")
            if r.write_rate is not None:
                line += f"; primary wrote {r.write_rate:,.0f} inserts/s during the burst"
            if r.drain_ms is not None:
                line += f"; last TXID seen {r.drain_ms:.1f} ms after its commit"
            if r.cpu:
                line += f"; {fmt_cpu(r.cpu, r.n)} (burst until the last TXID was seen)"
            neg = sum(1 for x in r.lags_ms if x < 0)
            if neg:
                line += (f"; {neg} negative lag(s): the replica showed the TXID before the writer "
                         "read its clock after the commit returned (the writer was descheduled)")
            if r.poll_errors:
                line += f"; {r.poll_errors} poll error(s), first: {r.poll_first_error}"
            print(line)
        print()

    problems = [w for rr in rates.values() for w in rr.warnings] + [w for r in lags for w in r.warnings]
    problems += failures
    if problems:
        print("Problems:")
        for p in problems:
            print(f"- {p}")
    else:
        print("Verification: after every run the replicas reached the primary's position (TXID and "
              "checksum), row counts matched and PRAGMA integrity_check returned ok on every node; "
              "every node exited with status 0.")
    sys.stdout.flush()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
