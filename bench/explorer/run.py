"""Explorer benchmark: a clustering run and find-similar latency at 100,000 items on PostgreSQL.

Run by hand (`make bench-explorer` or `.venv/bin/python bench/explorer/run.py`); it prints a table
and is never part of the test suite. It creates a throwaway PostgreSQL database (DATABASE_URL's
server, else 127.0.0.1:5432 as postgres), imports N synthetic conversations (100,000 by default)
written around planted topics, and stores for each a synthetic 384-dimensional unit vector with
the same planted structure (topic centre plus noise: what a sentence encoder gives, without
spending minutes encoding). Then, in this process, through the services and selectors:

- the clustering run (`clustering_run_execute`): load vectors, choose k by silhouette, k-means,
  c-TF-IDF terms from the items' texts, label distributions, 2-D map, one write transaction;
  reported with its stages, k found and the adjusted Rand index against the planted topics;
- find-similar (`items_similar`, k=10) for random items: the first query of a fresh process with
  no matrix file (read from the database, file written), a fresh process with the file (memory
  map), then p50/p95 over --queries warm queries; checked against brute force;
- near-duplicate screening of 500 new vectors against all (`near_duplicates`).

The machine is shared: the 1-minute load average is printed beside the figures.
Options: --items N, --topics N, --queries N, --keep-db.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support import postgres_database  # noqa: E402

DIM = 384
SEED = 20251123
GOAL_CLUSTER_S = 60.0
GOAL_SIMILAR_P95_MS = 100.0
_TOPIC_WORDS = """
    invoice refund delivery parcel courier tracking python exception traceback module pip
    recipe garlic oven flour butter lisbon hotel flight passport museum football goal referee
    league striker guitar chord melody piano concert vaccine fever doctor clinic symptom
    mortgage loan interest bank savings poem rhyme verse novel author telescope planet orbit
    galaxy comet contract lawyer court tenant lease garden tomato compost seed soil
"""
TOPIC_WORDS = _TOPIC_WORDS.split()
_FILLER = "please can you tell me about this thing I would like to know more"
FILLER = tuple(_FILLER.split())


def planted(n: int, topics: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors, topic per row): topic centres on the sphere plus isotropic noise."""
    centres = rng.normal(size=(topics, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.integers(0, topics, n)
    X = centres[truth] + rng.normal(scale=0.045, size=(n, DIM)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), truth


def conversations(truth: np.ndarray, topics: int) -> list[dict]:
    rng = random.Random(SEED)
    vocab = [TOPIC_WORDS[(t * 3) % len(TOPIC_WORDS) : (t * 3) % len(TOPIC_WORDS) + 6]
             for t in range(topics)]  # fmt: skip
    out = []
    for n, topic in enumerate(truth.tolist()):
        words = vocab[topic] * 2 + rng.sample(FILLER, 5)
        rng.shuffle(words)
        out.append({
            "external_id": f"b{n}",
            "messages": [{"role": "user", "content": " ".join(words[:8]) + f" #{n}"},
                         {"role": "assistant", "content": " ".join(words[4:]) + "."}],
        })  # fmt: skip
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--topics", type=int, default=24)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, postgres_database() as url:
        os.environ.update(DATABASE_URL=url, ANNOTATOR_VAR_DIR=tmp, ANNOTATOR_ENCODER="hashing",
                          DJANGO_SETTINGS_MODULE="annotator.settings")  # fmt: skip
        os.environ.pop("REDIS_URL", None)
        run(args)
        if args.keep_db:
            print(f"database kept: {url} (dropped anyway: --keep-db needs a pause)")


def run(args) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from annotator.celery import app

    app.conf.broker_url = "memory://"  # tasks the run would queue go nowhere
    call_command("migrate", verbosity=0)

    from labelling.learning import clustering
    from labelling.learning.encoders import to_bytes
    from labelling.models import Embedding, Project
    from labelling.selectors import explorer as selectors
    from labelling.services.clustering import clustering_run_execute, clustering_run_request
    from labelling.services.items import items_import

    rows: list[list[str]] = []
    load = os.getloadavg()[0]
    rng = np.random.default_rng(SEED)
    X, truth = planted(args.items, args.topics, rng)
    project = Project.objects.create(slug="bench", name="Bench")
    import io
    import json

    started = time.perf_counter()
    body = "".join(json.dumps(r) + "\n" for r in conversations(truth, args.topics)).encode()
    items_import(project=project, stream=io.BytesIO(body), fmt="jsonl")
    ids = list(project.items.order_by("pk").values_list("pk", flat=True))
    encoder = "bench-planted-384"
    for start in range(0, len(ids), 5000):
        Embedding.objects.bulk_create(
            [
                Embedding(item_id=pk, encoder=encoder, text_hash="-", vector=to_bytes(X[i]))
                for i, pk in enumerate(ids[start : start + 5000], start)
            ]  # fmt: skip
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"set-up: {len(ids):,} items and vectors in {time.perf_counter() - started:.1f} s")

    # Clustering run.
    run_row = clustering_run_request(project=project, trigger="manual")
    started = time.perf_counter()
    done = clustering_run_execute(run_id=run_row.pk)
    seconds = time.perf_counter() - started
    assert done.status == "succeeded", done.note
    from sklearn.metrics import adjusted_rand_score

    assigned = dict(project.items.values_list("pk", "cluster__index"))
    ari = adjusted_rand_score(truth, [assigned[pk] for pk in ids])
    stages = ", ".join(f"{k} {v:.1f}" for k, v in done.timings.items() if isinstance(v, float))
    rows.append([f"clustering run, {len(ids):,} items", f"{seconds:.1f} s",
                 f"≤ {GOAL_CLUSTER_S:.0f} s",
                 f"k={done.k} (planted {args.topics}), ARI {ari:.3f}; {stages}"])  # fmt: skip

    # Find similar.
    def query(pk: int):
        item = project.items.get(pk=pk)
        t = time.perf_counter()
        found = selectors.items_similar(project=project, item=item, k=10)
        return (time.perf_counter() - t) * 1000, found

    picks = random.Random(SEED).sample(ids, args.queries + 2)
    for path in (Path(os.environ["ANNOTATOR_VAR_DIR"]) / "vectors").glob("*"):
        path.unlink()
    selectors._MATRICES.clear()
    cold_db, _ = query(picks[0])
    selectors._MATRICES.clear()
    cold_file, _ = query(picks[1])
    warm, mismatches = [], 0
    for pk in picks[2:]:
        ms, found = query(pk)
        warm.append(ms)
        row = ids.index(pk)
        brute = np.argsort(-(X @ X[row]), kind="stable")[1:11]
        mismatches += [ids[i] for i in brute] != [s.item.pk for s in found]
    rows.append([f"find-similar k=10, {len(ids):,} items, warm", f"p95 {pct(warm, 95):.1f} ms",
                 f"≤ {GOAL_SIMILAR_P95_MS:.0f} ms",
                 f"p50 {statistics.median(warm):.1f} ms over {len(warm)}; "
                 f"{mismatches} differ from brute force"])  # fmt: skip
    matrix = selectors.vector_matrix_get(project=project)
    scans = []
    for pk in picks[2:]:
        t = time.perf_counter()
        np.asarray(matrix.vectors) @ np.asarray(matrix.vectors[matrix.row_of(pk)])
        scans.append((time.perf_counter() - t) * 1000)
    rows.append(["  of which the matrix scan alone", f"p95 {pct(scans, 95):.1f} ms", "",
                 f"p50 {statistics.median(scans):.1f} ms: {matrix.vectors.nbytes / 2**20:.0f} MB "
                 "read per query"])  # fmt: skip
    rows.append(["find-similar, fresh process, matrix file", f"{cold_file:.0f} ms", "",
                 "memory-mapped .npy"])  # fmt: skip
    rows.append(["find-similar, fresh process, no file", f"{cold_db:.0f} ms", "",
                 "vectors read from PostgreSQL, file written"])  # fmt: skip

    # Near-duplicate screening of an import of 500 against everything.
    new = X[:500] + rng.normal(scale=0.01, size=(500, DIM)).astype(np.float32)
    started = time.perf_counter()
    pairs = clustering.near_duplicates(new, X, 0.97)
    elapsed = time.perf_counter() - started
    rows.append([f"near-duplicates, 500 new vs {len(ids):,}", f"{elapsed:.2f} s", "",
                 f"{len(pairs)} of 500 near copies found"])  # fmt: skip

    print(f"\nload average (1 min) at start {load:.2f}, at end {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} CPUs\n")  # fmt: skip
    widths = [max(len(r[i]) for r in rows + [HEADER]) for i in range(4)]
    for row in [HEADER, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


HEADER = ["what", "figure", "goal", "notes"]


if __name__ == "__main__":
    main()
