"""Queue benchmark: next and submit latency over HTTP, and rater throughput, on a real server.

Run by hand (`make bench-queue` or `.venv/bin/python bench/queue/run.py`); prints a table.
PostgreSQL must be reachable (DATABASE_URL's server, else 127.0.0.1:5432 as postgres).

The server is gunicorn (4 workers x 3 threads, gthread) as in production. Latency rows: one
rater looping next+submit, then 50 raters who each pause about a second after every item (a
random 0.5-1.5 s, and a random start within the first second: raters started together with
equal pauses arrive as one burst of 50 requests, which no person-paced queue sees). Both after
a 3 s warm-up, and after a VACUUM ANALYZE and a CHECKPOINT of the freshly imported items (see
settle()). The throughput rows: 20 raters looping next+submit with no pause. The load client
runs on the same 2 cores as the server and the database, so latencies include some client time.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.queue_harness import RunLog, run_raters, running_server, snapshot  # noqa: E402
from tests.support import postgres_database, throwaway_sqlite  # noqa: E402

# One looping rater makes far more requests than the default per-token rate allows; the
# benchmark measures the queue, so the throttle stays on but with room to spare.
SERVER_ENV = {"ANNOTATOR_TOKEN_RATE": "10000000/hour"}
# Seconds of load before latencies are logged: each server thread opens its database connection
# on its first request, and a server is measured warm.
WARMUP = 3.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class RssWatcher:
    """Peak resident memory of the gunicorn master's worker processes, sampled."""

    def __init__(self, pid: int):
        self.master = psutil.Process(pid)
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for child in self.master.children():
                with contextlib.suppress(psutil.Error):
                    self.peak_mb = max(self.peak_mb, child.memory_info().rss / 2**20)
            time.sleep(0.2)

    def __enter__(self) -> RssWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def web_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the gunicorn master's workers have used so far."""
    total = 0.0
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def measured(server, log: RunLog, run) -> float:
    """Run the load; the web workers' CPU milliseconds per request it made. Robust to other
    load on the machine, unlike latency."""
    before = web_cpu_seconds(server.process.pid)
    run()
    used = web_cpu_seconds(server.process.pid) - before
    requests = sum(log.statuses.values())
    return 1000 * used / requests if requests else float("nan")


def settle(url: str) -> None:
    """VACUUM ANALYZE the fresh tables and CHECKPOINT, as autovacuum and the checkpointer do
    within minutes of an import: measured at once, their passes over a million freshly written
    rows land inside the timed window and stall commits instead."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) labelling_item, labelling_assignment")
        conn.execute("CHECKPOINT")


def duplicates(state: dict) -> tuple[int, int]:
    pairs = Counter((a[0], a[1]) for a in state["annotations"].values())
    per_item = Counter(a[0] for a in state["annotations"].values())
    over = sum(1 for item, n in per_item.items() if n > state["items"][str(item)][2])
    return sum(n - 1 for n in pairs.values() if n > 1), over


def latency_rows(size: int, args, rows: list) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        postgres_database() as url,
        running_server(Path(tmp), url, items=size, raters=51, overlap=1, workers=args.workers,
                       threads=args.threads,
                       extra_env=SERVER_ENV) as server,
    ):  # fmt: skip
        settle(url)
        with RssWatcher(server.process.pid) as rss:
            one = RunLog()
            cpu_one = measured(
                server,
                one,
                lambda: run_raters(
                    server, ["r0"], one, seconds=args.latency_seconds, warmup=WARMUP
                ),
            )
            many = RunLog()
            cpu_many = measured(
                server, many, lambda: run_raters(server, [f"r{n}" for n in range(1, 51)], many,
                                                 seconds=args.latency_seconds, pause=1.0,
                                                 warmup=WARMUP),
            )  # fmt: skip
        for label, log, cpu in (
            ("1 rater", one, cpu_one),
            ("50 raters, ~1 s pauses", many, cpu_many),
        ):
            rows.append(
                [
                    f"PostgreSQL {size:,} items, {label}",
                    f"{pct(log.next_ms, 50):.1f}",
                    f"{pct(log.next_ms, 95):.1f}",
                    f"{pct(log.submit_ms, 50):.1f}",
                    f"{pct(log.submit_ms, 95):.1f}",
                    f"{len(log.acknowledged)} (5xx {len(log.server_errors)}, "
                    f"429 {log.statuses.get(429, 0)})",
                    f"{cpu:.1f}",
                    f"{rss.peak_mb:.0f}",
                ]  # fmt: skip
            )


def throughput_row(engine: str, args, rows: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database = postgres_database() if engine == "PostgreSQL" else throwaway_sqlite(Path(tmp))
        with database as url, running_server(
            Path(tmp), url, items=args.throughput_items, raters=20, overlap=2, workers=2,
            threads=16, extra_env=SERVER_ENV,
        ) as server:  # fmt: skip
            with RssWatcher(server.process.pid) as rss:
                log = RunLog()
                started = time.monotonic()
                cpu = measured(
                    server, log,
                    lambda: run_raters(server, [f"r{n}" for n in range(20)], log,
                                       seconds=args.seconds),
                )  # fmt: skip
                elapsed = time.monotonic() - started
            state = snapshot(server)
    dupes, over = duplicates(state)
    rows.append(
        [
            f"{engine}, 20 raters looping {args.seconds:.0f} s",
            f"{pct(log.next_ms, 50):.1f}",
            f"{pct(log.next_ms, 95):.1f}",
            f"{pct(log.submit_ms, 50):.1f}",
            f"{pct(log.submit_ms, 95):.1f}",
            f"{len(log.acknowledged)} ({len(log.acknowledged) / elapsed:.0f}/s; dup {dupes}, "
            f"over {over}, 5xx {len(log.server_errors)}, 429 {log.statuses.get(429, 0)})",
            f"{cpu:.1f}",
            f"{rss.peak_mb:.0f}",
        ]  # fmt: skip
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="item counts for latency")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=60, help="throughput run length")
    parser.add_argument("--throughput-items", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (latency)")
    parser.add_argument("--threads", type=int, default=3, help="threads per worker (latency)")
    parser.add_argument(
        "--engines", default="PostgreSQL,SQLite", help="throughput runs ('' for none)"
    )
    args = parser.parse_args()
    rows: list[list[str]] = []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        print(f"… latency at {size:,} items", file=sys.stderr, flush=True)
        latency_rows(size, args, rows)
    for engine in [e for e in args.engines.split(",") if e]:
        print(f"… throughput on {engine}", file=sys.stderr, flush=True)
        throughput_row(engine, args, rows)
    header = ["run", "next p50 ms", "next p95", "submit p50", "submit p95", "annotations",
              "web CPU ms/request", "web RSS MB"]  # fmt: skip
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(
        "\nGoals: next p95 ≤ 15 ms (1 rater, 1M items), ≤ 50 ms with 50 raters; "
        "submit p95 ≤ 25 ms; ≥ 60 annotations/s with 0 duplicates; web ≤ 300 MB RSS.\n"
        "Label Studio on this machine: next p95 168–236 ms, submit p95 180–200 ms, "
        "7/s on PostgreSQL, 17–23% duplicates on SQLite."
    )


if __name__ == "__main__":
    main()
