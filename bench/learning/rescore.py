"""Train + rescore benchmark: one training run over N embedded items, timed step by step.

The embedding step is excluded: vectors are synthesised (unit-length, 384-d, grouped in
topics that decide the label) and written straight into the Embedding table, with a share of
the items labelled through their consensus. Each round then runs `training_run_execute` in this
process, exactly as the worker does, and the table shows the run's own timings (load, train,
score, predictions, write) and the wall time around it.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/annotator_h4 \\
        .venv/bin/python bench/learning/rescore.py --items 100000        # PostgreSQL
    .venv/bin/python bench/learning/rescore.py --items 100000 --sqlite   # a throwaway SQLite

On PostgreSQL the run uses its own database, `<name of DATABASE_URL's database>_rescore`,
dropped and created afresh. Goal (DESIGN.md): train + rescore 100k embedded items <= 20 s on
2 cores. The machine is shared, so the load average is printed with the table.

Measured 2026-12-08, PostgreSQL, 100k items, --pair, 1,000 labelled, one run each, load average
~1, the models reading the features on the items' 128 strongest directions (the default,
ANNOTATOR_FEATURE_DIMENSIONS): cold start 9.3 s (load 6.8, score 0.4), badge 9.2 s (load 5.8,
train 0.6, score 0.2), badge_alfamix (its margin part) 9.2 s, entropy 8.8 s. Finding the
directions (truncated SVD of a 20,000-row sample, 1.7 s) and projecting add about 3 s to the
load; k-means in 128 dimensions takes the cold start's scoring from 6.8 to 0.4 s. With
ANNOTATOR_FEATURE_DIMENSIONS=0 in the same hour: 12.0, 6.8, 6.6 and 5.9 s.

Measured 2026-12-07 (evening), PostgreSQL, 100k items, --pair, 100 labelled, load average ~1:
badge_alfamix 12.7 s (load 3.7, train 2.7, score 3.0, predictions 0.6, write 2.7) where most
items flip and its flip rule gives the batch to badge (the last column names the part run);
badge 14.4 s (one run each: noise). The ALFA-Mix path no longer runs on this data.

Measured 2026-12-07, a slower machine of the same kind, PostgreSQL, 100k items, --pair, one
run each, load average ~1: badge_alfamix's ALFA-Mix part (100 labelled) 25.9 s (load 4.2,
train 2.8, score 12.7, predictions 1.4, write 4.8) with the flips asked of the models on the
full 1,536 features; 19.1 s (score 4.3) with the items and class means projected on the span of
the models' coefficients first (classifiers.mixing_flips; the same flips). badge 15.6-19.4 s
in the same hour. Its margin part (1,000 labelled): 15.7 s (score 0.3), badge 20.8 s.

Measured 2026-12-03 (night), another machine of the same kind, PostgreSQL, 100k items,
--pair, one run each, load average ~1-2. Density (sampling.density) now takes row lengths by
einsum and no longer copies the pool into unit rows (1.6 s -> 0.1 s at 100k x 1,536). 20,000
labelled: badge 18.5 s before (load 5.1, train 5.3, score 4.0, predictions 0.6, write 3.5),
14.4 s after (3.3, 4.7, 2.6, 0.6, 3.2), entropy 11.3 s. 1,000 labelled: cold start 12.9 s
(scikit-learn's import included), badge 9.5 s, entropy 7.1 s.

Measured 2026-12-03 (evening), PostgreSQL, 100k items, 1,000 labelled, --pair, one run each,
load average ~1, a slower hour than the afternoon's: cold start 21.2 s (3.5 s of it importing
scikit-learn, paid by a worker's first run, here the first strategy), badge 18.7, entropy 15.6.

Measured 2026-12-03 (evening), PostgreSQL, 100k items, 20,000 labelled, --pair, one run each,
load average ~1: badge 29.7 s with training 13.0 s of it (two questions, each three calibration
folds of ~13k rows, then three models to score 100k items). Since a project with 5,000 labels
or more calibrates on one stratified 80/20 split (classifiers.CALIBRATION_ONE_SPLIT_FROM):
badge 23.5 s (load 6.2, train 7.2, score 4.4 of which 0.7 the near-copy check against 20k
labelled replies, predictions 0.9, write 4.7), entropy 19.3 s. Over the goal for badge at
this size. Two BLAS threads for fits of 5,000 rows or more, 30% faster for one fit alone, made
the run's training slower (18.2-19.9 s in three runs against 13.0 and 16.0 s): not kept.
On 20k synthetic rows the one split scored a log loss of 0.547 against 0.541 for three folds.

Measured 2026-12-03 (afternoon), PostgreSQL, 100k items, 1,000 labelled, --pair, every item
with a prompt-mate, one run each, load average ~1: cold start 16.2, badge 13.8, entropy 12.3 s;
the cold start was 21.8 s (badge 15.6, entropy 12.0) an hour earlier with three mini-batch
k-means initialisations instead of one.

Measured 2026-12-03 (morning), PostgreSQL, 100k items, 1,000 labelled, one run each, load
average ~1:
- --pair (2 x 384-d vectors, 1,536 features): cold start 13.8, badge 11.4, entropy 9.0 s;
  peak RSS 2.2 GB. Before reading vectors in binary and building the features in place:
  19.6, 15.9, 13.3 s (load 5-6 s of it), and 22.4, 21.3, 18.5 s before the features change.
- one text (384-d): cold start 7.6, badge 7.1, entropy 7.3 s; peak RSS 0.9 GB.

Measured 2026-11-23, PostgreSQL, 100k items, 1,000 labelled, medians of 3 (seconds):
- load average ~4 (first version: unnest UPDATE, k-means on all rows): cold start 10.0,
  entropy 10.3, hybrid 10.4;
- load average 12-16 (other engineers' benchmarks running; final code: COPY + UPDATE FROM,
  k-means on a 20k sample on one thread): cold start 27.2, entropy 25.8, hybrid 46.2, of which
  load 7, train 3-9, k-means 6-9, predictions 4-5, write 6-10;
- final code, load average 2.7 at the start (11.6 at the end): cold start 10.3, entropy 12.7,
  hybrid 17.0 (load 2.6-5.1, train 1-2.2, k-means 2-4, predictions 1.2-1.6, write 5-6.9).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GOAL_SECONDS = 20.0
DIM = 384
TOPICS = 40
OPTIONS = ["a", "b", "c", "d"]
SCHEMA = {
    "questions": [
        {"key": "kind", "type": "choice", "title": "Kind",
         "options": [{"value": v, "label": v.upper()} for v in OPTIONS]},
        {"key": "quality", "type": "rating", "title": "Quality", "scale": 5},
    ]
}  # fmt: skip


def _database(args: argparse.Namespace) -> str:
    """The URL of a fresh database for the bench (and create it)."""
    if args.sqlite:
        folder = Path(tempfile.mkdtemp(prefix="rescore-"))
        return f"sqlite:///{folder / 'bench.sqlite3'}"
    import psycopg

    url = os.environ.get("DATABASE_URL", "")
    assert url.startswith(("postgres://", "postgresql://")), "set DATABASE_URL or pass --sqlite"
    parts = urlsplit(url)
    name = parts.path.lstrip("/") + "_rescore"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def _setup_django(url: str, var_dir: Path) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["ANNOTATOR_VAR_DIR"] = str(var_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotator.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only-not-secret")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _fill(items: int, labelled: int, seed: int, pair: bool = False):
    """A project with `items` embedded items, `labelled` of them with a consensus; with
    `pair`, vectors of prompt and reply apart ([p | r] / sqrt 2, 2 x 384-d), as the "pair"
    embedding text stores them."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from labelling.learning.encoders import to_bytes
    from labelling.models import Embedding, Item
    from labelling.services.projects import project_create, project_update, schema_publish

    rng = np.random.default_rng(seed)
    owner = get_user_model().objects.create_user("bench-owner", is_staff=True)
    project = project_create(slug="rescore", name="Rescore bench", created_by=owner)
    schema_publish(project=project, definition=SCHEMA, created_by=owner)
    project_update(project=project, retrain_every=0, control_share=0.1)
    centres = rng.normal(size=(TOPICS, DIM)).astype(np.float32)
    topic = rng.integers(0, TOPICS, items)
    X = centres[topic] + 1.5 * rng.normal(size=(items, DIM)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    if pair:
        R = centres[topic] + 1.5 * rng.normal(size=(items, DIM)).astype(np.float32)
        R /= np.linalg.norm(R, axis=1, keepdims=True)
        X = np.hstack([X, R]) / np.float32(np.sqrt(2))
    encoder = "bench-synthetic#pair" if pair else "bench-synthetic"
    kind = np.array(OPTIONS)[topic % len(OPTIONS)]
    quality = 1 + topic % 5
    chosen = set(rng.choice(items, labelled, replace=False).tolist())
    batch = 5000
    for start in range(0, items, batch):
        rows = []
        for i in range(start, min(items, start + batch)):
            consensus = (
                {"kind": {"value": str(kind[i])}, "quality": {"value": int(quality[i])}}
                if i in chosen
                else {}
            )
            rows.append(
                Item(
                    project=project,
                    external_id=f"b{i}",
                    messages=[{"id": "t1", "role": "user", "content": f"question {i}"},
                              {"id": "t2", "role": "assistant", "content": f"answer {i}"}],
                    ratings=1 if consensus else 0,
                    consensus=consensus,
                )
            )  # fmt: skip
        with transaction.atomic():
            made = Item.objects.bulk_create(rows, batch_size=batch)
            Embedding.objects.bulk_create(
                [
                    # Two replies per prompt: every item has a prompt-mate.
                    Embedding(item_id=item.pk, encoder=encoder, text_hash="-",
                              prompt_hash=f"p{(start + j) // 2}", vector=to_bytes(X[start + j]))
                    for j, item in enumerate(made)
                ],
                batch_size=batch,
            )  # fmt: skip
    return project, kind, quality


def _one_run(project, trigger: str) -> tuple[float, dict]:
    from labelling.models import TrainingRun
    from labelling.services.training import training_run_execute

    started = time.perf_counter()
    # Created directly, not through training_run_request: no task for a worker to pick up.
    run = TrainingRun.objects.create(project=project, trigger=trigger)
    done = training_run_execute(run_id=run.pk)
    wall = time.perf_counter() - started
    assert done.status == "succeeded", f"run {done.pk} {done.status}: {done.note}"
    return wall, done.timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--labels", type=int, default=1000, help="items with a consensus")
    parser.add_argument("--repeat", type=int, default=3, help="runs per strategy; median shown")
    parser.add_argument("--strategies", nargs="*", default=["cold", "badge", "entropy"])
    parser.add_argument(
        "--pair", action="store_true", help="prompt and reply vectors apart (embedding_text pair)"
    )
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    var_dir = Path(tempfile.mkdtemp(prefix="rescore-var-"))
    url = _database(args)
    _setup_django(url, var_dir)
    from django.db import connection

    from labelling.models import Item
    from labelling.services.projects import project_update

    started = time.perf_counter()
    project, _, _ = _fill(args.items, args.labels, seed=0, pair=args.pair)
    shape = f"2 x {DIM}-d vectors (pairs; {4 * DIM} features)" if args.pair else f"{DIM}-d vectors"
    print(
        f"{connection.vendor}: {args.items} items, {args.labels} labelled, {shape}, "
        f"2 questions (choice of {len(OPTIONS)}, rating 1-5); "
        f"set-up {time.perf_counter() - started:.0f} s; "
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
    )
    results: dict[str, list[tuple[float, dict]]] = {}
    unlabelled = list(
        Item.objects.filter(project=project, ratings=0).values_list("pk", flat=True)[:1000]
    )
    for _ in range(args.repeat):
        for strategy in args.strategies:
            if strategy == "cold":
                # No question has enough labels: the k-means cold start orders the pool.
                project_update(project=project, learning_strategy="entropy")
                saved = dict(
                    Item.objects.filter(project=project, ratings__gt=0).values_list(
                        "pk", "consensus"
                    )
                )
                Item.objects.filter(pk__in=saved).update(ratings=0)
                results.setdefault(strategy, []).append(_one_run(project, "bench"))
                for pk, consensus in saved.items():
                    Item.objects.filter(pk=pk).update(ratings=1, consensus=consensus)
                continue
            project_update(project=project, learning_strategy=strategy)
            # One more label each round so the run's data hash differs and it really runs.
            pk = unlabelled.pop()
            Item.objects.filter(pk=pk).update(
                ratings=1, consensus={"kind": {"value": "a"}, "quality": {"value": 3}}
            )
            results.setdefault(strategy, []).append(_one_run(project, "bench"))
    steps = ["load", "train", "score", "predictions", "write"]
    print(
        f"\n{'order':<10} {'wall s':>7} {'run s':>7} "
        + " ".join(f"{s:>11}" for s in steps)
        + "  goal  the run's order"
    )
    for strategy, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        seconds = statistics.median(t["seconds"] for _, t in runs)
        parts = " ".join(
            f"{statistics.median(t.get(s, 0.0) for _, t in runs):>11.2f}" for s in steps
        )
        ok = "met" if wall <= GOAL_SECONDS else "missed"
        order = runs[-1][1].get("order", "")  # which part of badge_alfamix ran, say
        print(f"{strategy:<10} {wall:>7.2f} {seconds:>7.2f} {parts}  {ok:<6}{order}")
    print(
        f"\nmedian of {args.repeat} run(s) each; goal: train + rescore {args.items} items <= "
        f"{GOAL_SECONDS:.0f} s; load average after {os.getloadavg()[0]:.2f}"
    )
    connection.close()
    if not args.sqlite and not args.keep:
        import psycopg

        parts = urlsplit(url)
        admin = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}"')


if __name__ == "__main__":
    main()
