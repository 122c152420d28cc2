"""Many raters at once over HTTP, on PostgreSQL and on SQLite: the overlap guarantees hold."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime

import psycopg
import pytest

from tests.queue_harness import RunLog, answers_for, run_raters, running_server, snapshot
from tests.support import postgres_database, throwaway_sqlite

pytestmark = pytest.mark.slow


def check_invariants(state: dict, log: RunLog, *, max_overlap: int, change: tuple | None):
    items, annotations = state["items"], state["annotations"]
    assert not log.server_errors, log.server_errors[:5]
    # Every acknowledged submit is stored, with the answers that were sent.
    for annotation_id, answers in log.acknowledged.items():
        assert annotations[str(annotation_id)][3] == answers
    per_item = defaultdict(list)
    pairs = Counter()
    for pk in sorted(annotations, key=int):
        item_id, rater_id, created, _ = annotations[pk]
        per_item[str(item_id)].append(datetime.fromisoformat(created))
        pairs[(item_id, rater_id)] += 1
    assert max(pairs.values(), default=1) == 1, "a rater rated an item twice"
    for item_id, (ratings, leases, target, active) in items.items():
        count = len(per_item[item_id])
        assert ratings == count, f"item {item_id}: counter {ratings} != {count} annotations"
        assert leases == active, f"item {item_id}: {leases} leases counted, {active} active"
        assert count <= max_overlap, f"item {item_id} has {count} ratings"
        # Leases taken before a lowered overlap may stand until their submit is refused.
        assert ratings + leases <= max_overlap, f"item {item_id}: lease beyond overlap"
        if not change or change[1] >= max_overlap:
            assert ratings + leases <= target, f"item {item_id}: lease beyond overlap"
        if change:
            changed_at, new_overlap = change
            # After the change, no answer made an item exceed the new overlap.
            for rank, created in enumerate(per_item[item_id], start=1):
                if created > changed_at:
                    assert rank <= new_overlap, f"item {item_id} got rating {rank} after change"


@pytest.mark.parametrize(("overlap", "new_overlap"), [(1, 2), (2, 1), (3, 2)])
def test_50_raters_on_postgresql_never_exceed_the_overlap(tmp_path, overlap, new_overlap):
    with (
        postgres_database() as database_url,
        running_server(
            tmp_path, database_url, items=2000, raters=50, overlap=overlap, ttl=5,
            workers=3, threads=20,
        ) as server,
    ):  # fmt: skip
        log = RunLog()
        change: list = []

        def change_overlap_midway() -> None:
            time.sleep(4)
            status, project = server.client("admin").call(
                "PATCH",
                f"/api/v1/projects/{server.slug}/",
                # No extra raters on disagreement here: the overlap alone bounds the ratings.
                {"overlap": new_overlap, "max_overlap": new_overlap},
            )
            assert status == 200, project
            # Not the project's updated_at: that is stamped before the change commits. An
            # answer stamped after the response arrived was counted after the commit.
            change.append((datetime.now(UTC), new_overlap))

        changer = threading.Thread(target=change_overlap_midway)
        changer.start()
        run_raters(
            server,
            [f"r{n}" for n in range(50)],
            log,
            seconds=9,
            skip_rate=0.1,
            abandon_rate=0.03,
            ttl=5,
        )
        changer.join()
        state = snapshot(server)

    assert log.acknowledged, "no rater got anything done"
    check_invariants(
        state, log, max_overlap=max(overlap, new_overlap), change=change[0] if change else None
    )


def test_8_raters_on_sqlite_get_no_server_errors_and_no_duplicates(tmp_path):
    with (
        throwaway_sqlite(tmp_path) as database_url,
        running_server(tmp_path, database_url, items=300, raters=8, overlap=2, workers=2,
                       threads=4) as server,
    ):  # fmt: skip
        log = RunLog()
        run_raters(server, [f"r{n}" for n in range(8)], log, seconds=6, skip_rate=0.1)
        state = snapshot(server)

    assert len(log.acknowledged) > 50
    check_invariants(state, log, max_overlap=2, change=None)


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
def test_the_same_idempotency_key_sent_10_times_at_once_stores_one_annotation(tmp_path, engine):
    database = postgres_database() if engine == "postgresql" else throwaway_sqlite(tmp_path)
    with (
        database as database_url,
        running_server(
            tmp_path, database_url, items=5, raters=1, overlap=1, workers=2, threads=8
        ) as server,
    ):
        status, lease = server.client("r0").call("POST", f"/api/v1/projects/{server.slug}/next/")
        assert status == 200
        body = {"answers": answers_for(lease), "idempotency_key": uuid.uuid4().hex}
        path = f"/api/v1/assignments/{lease['assignment']['id']}/submit/"
        barrier = threading.Barrier(10)
        results: list[tuple[int, dict]] = []

        def send() -> None:
            client = server.client("r0")
            barrier.wait()
            results.append(client.call("POST", path, body))

        threads = [threading.Thread(target=send) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        state = snapshot(server)

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 9 + [201], statuses
    assert len({annotation["id"] for _, annotation in results}) == 1
    assert len(state["annotations"]) == 1


def test_next_waits_for_a_pool_wide_write_instead_of_answering_nothing_left(tmp_path):
    """A training or clustering run rewrites every item of the pool in one transaction. While
    its row locks stand, SKIP LOCKED sees no candidate; `next` must wait, not answer 204."""
    with (
        postgres_database() as database_url,
        running_server(tmp_path, database_url, items=50, raters=1, overlap=1, workers=1,
                       threads=2) as server,
    ):  # fmt: skip
        writer = psycopg.connect(database_url.replace("postgres://", "postgresql://", 1))
        writer.execute("UPDATE labelling_item SET priority = priority + 1")  # locks every row
        answered: list = []
        rater = threading.Thread(
            target=lambda: answered.append(
                server.client("r0").call("POST", f"/api/v1/projects/{server.slug}/next/")
            )
        )
        rater.start()
        time.sleep(1.5)
        assert not answered, f"next answered while every row was locked: {answered}"
        writer.commit()
        writer.close()
        rater.join(timeout=30)
        status, lease = answered[0]
        assert status == 200, (status, lease)
        assert lease["item"]["id"]
