#!/usr/bin/env python3
"""SQLite on plain local disk versus SQLite through a litefs-rs mount.

Runs the same workloads against a plain directory and against a mounted litefs-rs FUSE
directory, alternating between the two, repeated R times, and prints the median ops/s of
each side, the ratio mount/plain (throughput ratio: below 1 means the mount is slower), and
the per-operation latency. Standard library only.

Usually started by scripts/bench.sh, which builds litefs-rs, mounts it and cleans up:

    python3 bench/mount_bench.py --plain DIR --mount MNT [--repeat 3] [...]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

INSERT_SQL = "INSERT INTO t(v) VALUES (?)"
SELECT_SQL = "SELECT v FROM t WHERE id = ?"
CREATE_SQL = "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"
VALUE_SIZE = 100


class WorkloadError(Exception):
    """An SQL statement failed; carries the statement so it can be reported as is."""

    def __init__(self, side: str, db: str, stmt: str, err: BaseException, where: str = ""):
        self.side, self.db, self.stmt, self.err, self.where = side, db, stmt, err, where
        code = getattr(err, "sqlite_errorname", None)  # Python 3.11+: e.g. SQLITE_IOERR_FSYNC
        super().__init__(
            f"{side}: {db}: {type(err).__name__}: {err}" + (f" [{code}]" if code else "")
            + f" -- statement: {stmt!r}"
            + (f" ({where})" if where else "")
        )


def sql(conn: sqlite3.Connection, side: str, db: str, stmt: str, params=()):
    """Runs one statement outside the timed loops, turning an error into a WorkloadError."""
    try:
        return conn.execute(stmt, params).fetchall()
    except sqlite3.Error as err:
        raise WorkloadError(side, db, stmt, err) from err


def connect(side: str, path: str) -> sqlite3.Connection:
    try:
        # isolation_level=None: no implicit BEGIN, every statement autocommits.
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as err:
        raise WorkloadError(side, path, f"sqlite3.connect({path!r})", err) from err


def set_mode(conn, side, db, journal_mode: str, synchronous: str) -> None:
    got = sql(conn, side, db, f"PRAGMA journal_mode={journal_mode}")[0][0]
    if got.lower() != journal_mode.lower():
        raise WorkloadError(
            side, db, f"PRAGMA journal_mode={journal_mode}",
            RuntimeError(f"journal_mode is {got!r}, wanted {journal_mode!r}"),
        )
    sql(conn, side, db, f"PRAGMA synchronous={synchronous}")


# --- workloads ---------------------------------------------------------------------------


@dataclass
class Workload:
    key: str
    label: str
    kind: str  # "insert" | "read"
    journal_mode: str
    synchronous: str = "FULL"
    count: int = 0
    one_txn: bool = False  # reads: all SELECTs inside one BEGIN ... COMMIT
    plain: list[float] = field(default_factory=list)  # ops/s per repetition
    mount: list[float] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def verify(side: str, path: str, expected_rows: int, wl: Workload) -> None:
    """Cheap correctness check on a fresh connection: row count and integrity_check."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            n = conn.execute("SELECT count(*) FROM t").fetchone()[0]
            ic = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as err:
        code = getattr(err, "sqlite_errorname", None)
        msg = (f"WARNING: {side}: {os.path.basename(path)}: verification failed: "
               f"{type(err).__name__}: {err}" + (f" [{code}]" if code else ""))
        print(msg, flush=True)
        wl.warnings.append(msg)
        return
    problems = []
    if n != expected_rows:
        problems.append(f"row count {n}, expected {expected_rows}")
    if ic != ["ok"]:
        problems.append(f"integrity_check: {'; '.join(ic[:5])}")
    if problems:
        msg = f"WARNING: {side}: {os.path.basename(path)}: " + ", ".join(problems)
        print(msg, flush=True)
        wl.warnings.append(msg)


def run_insert(side: str, path: str, wl: Workload, values: list[bytes]) -> float:
    """Fresh database, one persistent connection, len(values) single-row autocommit INSERTs.
    Returns ops/s of the timed loop."""
    db = os.path.basename(path)
    conn = connect(side, path)
    try:
        set_mode(conn, side, db, wl.journal_mode, wl.synchronous)
        sql(conn, side, db, CREATE_SQL)
        cur = conn.cursor()
        i = 0
        try:
            t0 = time.perf_counter()
            for i, v in enumerate(values):
                cur.execute(INSERT_SQL, (v,))
            elapsed = time.perf_counter() - t0
        except sqlite3.Error as err:
            raise WorkloadError(side, db, INSERT_SQL, err, f"insert #{i + 1} of {len(values)}") from err
    finally:
        conn.close()
    verify(side, path, len(values), wl)
    return len(values) / elapsed


def prepare_read_db(side: str, path: str, journal_mode: str, rows: int, values: list[bytes]) -> None:
    """Creates the read-benchmark database: `rows` rows, filled in one transaction."""
    db = os.path.basename(path)
    conn = connect(side, path)
    try:
        set_mode(conn, side, db, journal_mode, "FULL")
        sql(conn, side, db, CREATE_SQL)
        stmt = "BEGIN; INSERT INTO t(id, v) VALUES (?, ?) x%d; COMMIT" % rows
        try:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t(id, v) VALUES (?, ?)", ((i + 1, values[i % len(values)]) for i in range(rows)))
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise WorkloadError(side, db, stmt, err, "prefill") from err
    finally:
        conn.close()


def run_read(side: str, path: str, wl: Workload, ids: list[int], rows: int) -> float:
    """One persistent connection, len(ids) point SELECTs by primary key: each in its own
    autocommit read transaction, or all inside one BEGIN ... COMMIT (wl.one_txn)."""
    db = os.path.basename(path)
    conn = connect(side, path)
    try:
        # Same cache state on both sides before timing: schema loaded, page cache warm-ish.
        sql(conn, side, db, "SELECT count(*) FROM t")
        cur = conn.cursor()
        stmt = SELECT_SQL
        i = 0
        try:
            t0 = time.perf_counter()
            if wl.one_txn:
                stmt = "BEGIN"
                cur.execute("BEGIN")
                stmt = SELECT_SQL
                for i, k in enumerate(ids):
                    cur.execute(SELECT_SQL, (k,))
                    # fetchall steps to SQLITE_DONE so the statement is finished each time.
                    if not cur.fetchall():
                        raise sqlite3.DatabaseError(f"no row for id {k}")
                stmt = "COMMIT"
                cur.execute("COMMIT")
            else:
                for i, k in enumerate(ids):
                    cur.execute(SELECT_SQL, (k,))
                    # Reaching SQLITE_DONE ends the autocommit read transaction.
                    if not cur.fetchall():
                        raise sqlite3.DatabaseError(f"no row for id {k}")
            elapsed = time.perf_counter() - t0
        except sqlite3.Error as err:
            raise WorkloadError(side, db, stmt, err, f"select #{i + 1} of {len(ids)}") from err
    finally:
        conn.close()
    verify(side, path, rows, wl)
    return len(ids) / elapsed


# --- reporting ---------------------------------------------------------------------------


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt_ops(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def fmt_us(ops: float | None) -> str:
    return "—" if not ops else f"{1e6 / ops:,.1f}"


def df_line(path: str) -> str:
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True, check=True).stdout
        lines = out.strip().splitlines()
        parts = lines[-1].split()
        return f"{parts[1]} ({parts[0]}, mounted on {parts[-1]})"
    except (OSError, subprocess.CalledProcessError, IndexError) as err:
        return f"unknown ({err})"


def mount_state(mnt: str) -> str:
    """What the mount looks like right now (after an error): still mounted, listable?"""
    try:
        names = os.listdir(mnt)
        listing = f"listdir ok ({len(names)} entries)"
    except OSError as err:
        listing = f"listdir failed: {err}"
    return f"ismount={os.path.ismount(mnt)}, {listing}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def page_size(path: str) -> str:
    try:
        conn = sqlite3.connect(path)
        try:
            return str(conn.execute("PRAGMA page_size").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as err:
        return f"unknown ({err})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain", required=True, help="directory on local disk for the plain databases")
    ap.add_argument("--mount", required=True, help="the litefs-rs mount directory (fuse.dir)")
    ap.add_argument("--data-dir", help="the mount's data.dir (only to report its filesystem)")
    ap.add_argument("--repeat", "-r", type=int, default=3, help="repetitions per side (default 3); medians are reported")
    ap.add_argument("--full-inserts", type=int, default=2000, help="INSERTs per run with synchronous=FULL (default 2000)")
    ap.add_argument("--normal-inserts", type=int, default=20000, help="INSERTs per run with WAL/synchronous=NORMAL (default 20000)")
    ap.add_argument("--reads", type=int, default=100_000, help="point SELECTs per read run (default 100000)")
    ap.add_argument("--read-rows", type=int, default=10_000, help="rows in the read databases (default 10000)")
    ap.add_argument("--only", help="comma-separated workload keys to run: "
                    "delete-full,wal-full,wal-normal,read-delete,read-wal,read-txn-delete,read-txn-wal")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--note", default="", help="free text printed with the results (e.g. the mount's config)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    for d in (args.plain, args.mount):
        if not os.path.isdir(d):
            ap.error(f"not a directory: {d}")
    if not os.path.ismount(args.mount):
        print(f"WARNING: {args.mount} is not a mount point", flush=True)

    workloads = [
        Workload("delete-full", "INSERT autocommit, DELETE, sync=FULL", "insert", "DELETE", "FULL", args.full_inserts),
        Workload("wal-full", "INSERT autocommit, WAL, sync=FULL", "insert", "WAL", "FULL", args.full_inserts),
        Workload("wal-normal", "INSERT autocommit, WAL, sync=NORMAL", "insert", "WAL", "NORMAL", args.normal_inserts),
        Workload("read-delete", "SELECT by PK, autocommit each (DELETE db)", "read", "DELETE", count=args.reads),
        Workload("read-wal", "SELECT by PK, autocommit each (WAL db)", "read", "WAL", count=args.reads),
        Workload("read-txn-delete", "SELECT by PK, one read txn (DELETE db)", "read", "DELETE", count=args.reads, one_txn=True),
        Workload("read-txn-wal", "SELECT by PK, one read txn (WAL db)", "read", "WAL", count=args.reads, one_txn=True),
    ]
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = set(keys) - {w.key for w in workloads}
        if unknown:
            ap.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
        workloads = [w for w in workloads if w.key in keys]

    rng = random.Random(args.seed)
    dirs = {"plain": args.plain, "mount": args.mount}
    run_id = time.strftime("%H%M%S")

    print(f"# litefs-rs mount benchmark  ({time.strftime('%Y-%m-%d %H:%M:%S')})")
    print(f"plain: {args.plain}  [{df_line(args.plain)}]")
    print(f"mount: {args.mount}  [{df_line(args.mount)}]")
    if args.data_dir:
        print(f"mount data.dir: {args.data_dir}  [{df_line(args.data_dir)}]")
    if args.note:
        print(f"note: {args.note}")
    print(f"repeat={args.repeat}  full-inserts={args.full_inserts}  normal-inserts={args.normal_inserts}  "
          f"reads={args.reads}  read-rows={args.read_rows}  seed={args.seed}")
    print(flush=True)

    t_start = time.perf_counter()
    read_dbs: dict[tuple[str, str], str] = {}  # (side, journal_mode) -> path
    failed = False

    for wl in workloads:
        print(f"## {wl.label}  [{wl.key}]", flush=True)
        try:
            if wl.kind == "insert":
                values = [rng.randbytes(VALUE_SIZE) for _ in range(wl.count)]
            else:
                ids = [rng.randint(1, args.read_rows) for _ in range(wl.count)]
                for side in ("plain", "mount"):
                    key = (side, wl.journal_mode)
                    if key not in read_dbs:
                        path = os.path.join(dirs[side], f"b{run_id}-read-{wl.journal_mode.lower()}.db")
                        prefill = [rng.randbytes(VALUE_SIZE) for _ in range(1000)]
                        prepare_read_db(side, path, wl.journal_mode, args.read_rows, prefill)
                        read_dbs[key] = path
            for rep in range(args.repeat):
                # Alternate which side goes first, so slow drifts of the machine hit both.
                order = ("plain", "mount") if rep % 2 == 0 else ("mount", "plain")
                for side in order:
                    if wl.kind == "insert":
                        path = os.path.join(dirs[side], f"b{run_id}-{wl.key}-{rep}.db")
                        ops = run_insert(side, path, wl, values)
                    else:
                        ops = run_read(side, read_dbs[(side, wl.journal_mode)], wl, ids, args.read_rows)
                    getattr(wl, side).append(ops)
                    print(f"  rep {rep + 1}/{args.repeat} {side:5s}: {ops:12,.0f} ops/s  {1e6 / ops:9.1f} µs/op", flush=True)
        except WorkloadError as err:
            wl.error = str(err)
            failed = True
            print(f"  ERROR: {err}", flush=True)
            if err.side == "mount":
                print(f"  mount state after the error: {mount_state(args.mount)}", flush=True)
        print(flush=True)

    total = time.perf_counter() - t_start

    # Facts.
    any_plain_db = next(iter(read_dbs.values()), None)
    if any_plain_db is None:
        for name in sorted(os.listdir(args.plain)):
            if name.endswith(".db"):
                any_plain_db = os.path.join(args.plain, name)
                break
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("## Results (median of each side over the repetitions)")
    print()
    print(f"- SQLite {sqlite3.sqlite_version} (Python {platform.python_version()} sqlite3 module), "
          f"page size {page_size(any_plain_db) if any_plain_db else 'unknown'} bytes, "
          f"{VALUE_SIZE}-byte values")
    print(f"- nproc {nproc}, {cpu_model()}, kernel {platform.release()}")
    print(f"- plain dir filesystem: {df_line(args.plain)}")
    if args.data_dir:
        print(f"- mount data.dir filesystem: {df_line(args.data_dir)}")
    print(f"- repetitions {args.repeat}, plain and mount alternated; benchmark time {total:.1f} s")
    if args.note:
        print(f"- {args.note}")
    print()
    print("| workload | ops/run | plain ops/s | mount ops/s | ratio mount/plain |")
    print("|---|---:|---:|---:|---:|")
    for wl in workloads:
        p, m = med(wl.plain), med(wl.mount)
        ratio = f"{m / p:.3f}" if p and m else ("FAILED" if wl.error else "—")
        label = wl.label + (" **(headline)**" if wl.key == "read-delete" else "")
        print(f"| {label} | {wl.count:,} | {fmt_ops(p)} | {fmt_ops(m)} | {ratio} |")
    print()
    print("| workload | plain µs/op | mount µs/op | mount − plain µs/op |")
    print("|---|---:|---:|---:|")
    for wl in workloads:
        p, m = med(wl.plain), med(wl.mount)
        diff = f"{1e6 / m - 1e6 / p:,.1f}" if p and m else "—"
        print(f"| {wl.label} | {fmt_us(p)} | {fmt_us(m)} | {diff} |")
    print()
    print("Spread (min–max ops/s over the repetitions):")
    for wl in workloads:
        parts = []
        for side in ("plain", "mount"):
            xs = getattr(wl, side)
            if xs:
                parts.append(f"{side} {min(xs):,.0f}–{max(xs):,.0f}")
        print(f"- {wl.key}: " + ("; ".join(parts) if parts else "no data"))
    problems = [(wl, w) for wl in workloads for w in wl.warnings] + [(wl, wl.error) for wl in workloads if wl.error]
    print()
    if problems:
        print("Problems:")
        for wl, msg in problems:
            print(f"- [{wl.key}] {msg}")
    else:
        print("Verification: every run's row count matched and PRAGMA integrity_check returned ok.")
    sys.stdout.flush()
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
