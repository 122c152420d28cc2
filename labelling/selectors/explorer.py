"""Reads for the explorer: find-similar over a memory-mapped vector matrix, text search, filters,
the latest clusters and the near-duplicate list.

Find-similar compares one vector with every item of the project. Reading 100,000 vectors from
the database per query is far too slow, so each project's vectors (of one encoder) are kept in
a float32 matrix file under `<VAR_DIR>/vectors/`, written atomically by the embedding task and
by clustering runs, memory-mapped by web processes and checked against the database at most
every CHECK_SECONDS (count, max id and newest time of the project's vectors). When the file is
missing or stale the matrix is read from the database once and the file rewritten.

Files (FORMAT_VERSION 1):
  <project id>-<encoder hash>.json           {"format", "encoder", "stamp", "vectors", "ids"}
  <project id>-<encoder hash>-<token>.npy    float32 (n, d), unit rows, in item id order
  <project id>-<encoder hash>-<token>.ids.npy  int64 (n,), sorted item ids
The JSON is renamed into place last, so a reader sees either the old pair or the new pair.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import Count, Func, Max, Q, QuerySet, TextField, Value
from django.db.models.functions import Coalesce, Concat

from labelling.errors import InvalidInput, NotFound
from labelling.models import (
    Cluster,
    ClusteringRun,
    Embedding,
    Hold,
    Item,
    ItemStatus,
    Project,
    RunStatus,
    Tag,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # 1: vectors .npy + ids .npy + a JSON pointer renamed into place last
# How long a web process trusts its matrix before asking the database whether vectors changed.
# Within this window it still notices at once a file rewritten by a worker (a stat per query).
CHECK_SECONDS = 5.0
LOAD_CHUNK = 10_000

# Filters of the explorer's searches and bulk selections: name -> kind. An allowlist.
FILTERS = {
    "status": "choice",
    "hold": "choice",
    "cluster": "int",
    "tag": "str",
    "language": "str",
    "source": "str",
    "consent": "str",
}
HOLD_VALUES = {"none": Hold.NONE, "duplicate": Hold.DUPLICATE, "excluded": Hold.EXCLUDED}


# --- the vector matrix -------------------------------------------------------------------------


@dataclass
class VectorMatrix:
    """A project's vectors of one encoder: sorted item ids and their unit float32 rows."""

    encoder: str
    ids: np.ndarray  # int64 (n,), sorted
    vectors: np.ndarray  # float32 (n, d); a read-only memory map when read from the file
    stamp: list
    source: str  # "file" or "database"

    def row_of(self, item_id: int) -> int | None:
        at = int(np.searchsorted(self.ids, item_id))
        return at if at < self.ids.size and int(self.ids[at]) == item_id else None


# (VAR_DIR, project id) -> (checked at, meta file mtime, matrix). VAR_DIR is in the key so that
# tests, each with their own directory and reused ids, never see another test's matrix.
_MATRICES: dict[tuple[str, int], tuple[float, int, VectorMatrix]] = {}


def _vectors_dir() -> Path:
    return Path(settings.VAR_DIR) / "vectors"


def _base_name(project_id: int, encoder: str) -> str:
    return f"{project_id}-{hashlib.sha256(encoder.encode()).hexdigest()[:12]}"


def embedding_stamps(*, project: Project) -> dict[str, list]:
    """{encoder: [count, max embedding id, newest created_at (ISO)]} of the project's vectors.

    Cheap enough to ask every few seconds; any new, removed or re-embedded vector changes it.
    """
    rows = (
        Embedding.objects.filter(item__project=project)
        .values("encoder")
        .annotate(n=Count("id"), last_id=Max("id"), last=Max("created_at"))
        .order_by()
    )
    return {row["encoder"]: [row["n"], row["last_id"], row["last"].isoformat()] for row in rows}


def _latest_encoder(stamps: dict[str, list]) -> str | None:
    # The encoder of the newest vector, as embedding_encoder_latest says.
    return max(stamps, key=lambda name: stamps[name][2]) if stamps else None


def vector_matrix_from_database(*, project: Project, encoder: str, stamp: list) -> VectorMatrix:
    """Every vector of the project for the encoder, read in chunks into one float32 array."""
    query = (
        Embedding.objects.filter(item__project=project, encoder=encoder)
        .order_by("item_id")
        .values_list("item_id", "vector")
    )
    capacity = max(int(stamp[0]), 1)
    ids = np.empty(capacity, dtype=np.int64)
    vectors: np.ndarray | None = None
    count = 0
    for item_id, data in query.iterator(chunk_size=LOAD_CHUNK):
        row = np.frombuffer(bytes(data), dtype="<f4")
        if vectors is None:
            vectors = np.empty((capacity, row.size), dtype=np.float32)
        if count == ids.size:  # vectors added since the stamp was taken
            ids = np.resize(ids, ids.size * 2)
            vectors = np.resize(vectors, (ids.size, vectors.shape[1]))
        ids[count] = item_id
        vectors[count] = row
        count += 1
    if vectors is None:
        vectors = np.zeros((0, 0), dtype=np.float32)
    return VectorMatrix(encoder, ids[:count], vectors[:count], stamp, "database")


def vector_matrix_save(*, project: Project, matrix: VectorMatrix) -> Path | None:
    """Write the matrix files atomically (temporary names, then renames); None if not written."""
    folder = _vectors_dir()
    base = _base_name(project.pk, matrix.encoder)
    token = secrets.token_hex(4)
    pointer = folder / f"{base}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        vectors_name, ids_name = f"{base}-{token}.npy", f"{base}-{token}.ids.npy"
        for name, array in ((vectors_name, matrix.vectors), (ids_name, matrix.ids)):
            partial = folder / f".{name}.partial"
            with open(partial, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array))
            os.replace(partial, folder / name)
        meta = {
            "format": FORMAT_VERSION, "encoder": matrix.encoder, "stamp": matrix.stamp,
            "vectors": vectors_name, "ids": ids_name,
        }  # fmt: skip
        partial = folder / f".{base}.json.partial"
        partial.write_text(json.dumps(meta))
        os.replace(partial, pointer)
    except OSError:
        log.exception("could not write the vector matrix of project %s", project.pk)
        return None
    # Earlier pairs (also any left by a concurrent writer) go. Processes that mapped them keep
    # reading them until they unmap: POSIX keeps an unlinked file alive while it is mapped.
    for path in folder.glob(f"{base}-*.npy"):
        if path.name not in (vectors_name, ids_name):
            with contextlib.suppress(OSError):
                path.unlink()
    return pointer


def _read_pointer(pointer: Path) -> dict | None:
    try:
        meta = json.loads(pointer.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT_VERSION else None


def _matrix_from_file(project: Project, encoder: str) -> tuple[int, VectorMatrix] | None:
    """(pointer mtime, matrix) from the files, memory-mapped; None when missing or unreadable."""
    pointer = _vectors_dir() / f"{_base_name(project.pk, encoder)}.json"
    try:
        mtime = pointer.stat().st_mtime_ns
    except OSError:
        return None
    meta = _read_pointer(pointer)
    if meta is None or meta.get("encoder") != encoder:
        return None
    try:
        vectors = np.load(pointer.parent / meta["vectors"], mmap_mode="r")
        ids = np.load(pointer.parent / meta["ids"])
    except (OSError, ValueError, KeyError):
        return None  # replaced between reading the pointer and opening; the caller reloads
    if vectors.dtype != np.float32 or vectors.ndim != 2 or ids.shape[0] != vectors.shape[0]:
        return None
    return mtime, VectorMatrix(encoder, ids, vectors, list(meta["stamp"]), "file")


def vector_matrix_refresh(*, project: Project, encoder: str | None = None) -> VectorMatrix | None:
    """Make the file and this process's copy match the database now; the matrix, or None when
    the project has no vectors. The embedding task and clustering runs call this."""
    return vector_matrix_get(project=project, encoder=encoder, max_age=0.0)


def vector_matrix_get(
    *, project: Project, encoder: str | None = None, max_age: float | None = None
) -> VectorMatrix | None:
    """The project's vectors of `encoder` (default: the encoder of its newest vector).

    Served from this process's memory map while it is younger than max_age (CHECK_SECONDS)
    and its file unchanged; then checked against the database, and re-read from the file or,
    when the file is missing or stale, from the database (and the file rewritten).
    """
    max_age = CHECK_SECONDS if max_age is None else max_age
    key = (str(settings.VAR_DIR), project.pk)
    cached = _MATRICES.get(key)
    now = time.monotonic()
    if cached and (encoder is None or cached[2].encoder == encoder) and now - cached[0] < max_age:
        pointer = _vectors_dir() / f"{_base_name(project.pk, cached[2].encoder)}.json"
        with contextlib.suppress(OSError):
            if pointer.stat().st_mtime_ns == cached[1]:
                return cached[2]
    stamps = embedding_stamps(project=project)
    encoder = encoder or _latest_encoder(stamps)
    if encoder is None or encoder not in stamps:
        _MATRICES.pop(key, None)
        return None
    stamp = stamps[encoder]
    pointer = _vectors_dir() / f"{_base_name(project.pk, encoder)}.json"
    if cached and cached[2].encoder == encoder and cached[2].stamp == stamp:
        # Still current. Note the file's time (another process may have rewritten it with
        # the same vectors), and write it again if it went missing.
        try:
            mtime = pointer.stat().st_mtime_ns
        except OSError:
            vector_matrix_save(project=project, matrix=cached[2])
            mtime = _mtime(pointer)
        _MATRICES[key] = (now, mtime, cached[2])
        return cached[2]
    from_file = _matrix_from_file(project, encoder)
    if from_file and from_file[1].stamp == stamp:
        _MATRICES[key] = (now, from_file[0], from_file[1])
        return from_file[1]
    matrix = vector_matrix_from_database(project=project, encoder=encoder, stamp=stamp)
    vector_matrix_save(project=project, matrix=matrix)
    _MATRICES[key] = (now, _mtime(pointer), matrix)
    return matrix


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


# --- find similar and search -------------------------------------------------------------------


@dataclass
class Similar:
    item: Item
    similarity: float


def items_similar(*, project: Project, item: Item, k: int = 10) -> list[Similar]:
    """The k items of the project most similar to `item` (cosine of the latest encoder's
    vectors), most similar first, the item itself left out. [] while the item has no vector."""
    from labelling.learning.clustering import similar

    matrix = vector_matrix_get(project=project)
    if matrix is None or matrix.vectors.shape[0] == 0:
        return []
    row = matrix.row_of(item.pk)
    if row is not None:
        vector = np.asarray(matrix.vectors[row])
    else:
        # Embedded after this process last looked: its own vector from the database.
        data = (
            Embedding.objects.filter(item=item, encoder=matrix.encoder)
            .values_list("vector", flat=True)
            .first()
        )
        if data is None:
            return []
        vector = np.frombuffer(bytes(data), dtype="<f4")
        if vector.size != matrix.vectors.shape[1]:
            return []
    indices, scores = similar(matrix.vectors, vector, k + 1)
    ranked = [(int(matrix.ids[i]), float(s)) for i, s in zip(indices, scores, strict=True)]
    ranked = [(pk, s) for pk, s in ranked if pk != item.pk][:k]
    found = Item.objects.filter(project=project, pk__in=[pk for pk, _ in ranked]).in_bulk()
    return [Similar(found[pk], round(s, 4)) for pk, s in ranked if pk in found]


class _Contents(Func):
    """The `content` values of a JSON array of messages, as text (PostgreSQL)."""

    function = "jsonb_path_query_array"
    template = "%(function)s(%(expressions)s, '$[*].content')::text"
    output_field = TextField()


def items_search(
    *, project: Project, text: str = "", filters: dict | None = None
) -> QuerySet[Item]:
    """The project's items whose message (or candidate) content contains `text` (any case),
    narrowed by `filters` (see items_filtered)."""
    items = items_filtered(project=project, filters=filters or {})
    return items_text_filter(items=items, text=text)


def items_text_filter(*, items: QuerySet[Item], text: str) -> QuerySet[Item]:
    """Items whose message or candidate content contains `text` (any case), or whose
    external_id is `text`.

    On PostgreSQL only the content values are searched (a sequential ILIKE, fine to ~10⁵
    items); elsewhere the stored JSON is searched, with the text escaped as JSON escapes it,
    and SQLite folds the case of ASCII letters only.
    """
    text = (text or "").strip()
    if not text:
        return items
    if connection.vendor == "postgresql":
        # Only the content values, not the keys ("role", "user", ...) around them.
        text_field = TextField()
        contents = Concat(
            _Contents("messages"),
            Value(" ", output_field=text_field),
            Coalesce(_Contents("candidates"), Value("", output_field=text_field)),
            output_field=text_field,
        )
        return items.annotate(_content=contents).filter(
            Q(_content__icontains=json.dumps(text, ensure_ascii=False)[1:-1]) | Q(external_id=text)
        )
    escaped = json.dumps(text)[1:-1]  # SQLite stores JSON with non-ASCII as \uXXXX
    return items.filter(
        Q(messages__icontains=escaped) | Q(candidates__icontains=escaped) | Q(external_id=text)
    )


def items_filtered(*, project: Project, filters: dict) -> QuerySet[Item]:
    """The project's items narrowed by an allowlist of filters (FILTERS); unknown names or bad
    values are an InvalidInput, never passed to the ORM. `hold` takes none/duplicate/excluded;
    `tag` a tag name; `cluster` a cluster id."""
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise InvalidInput(
            f"Unknown filter(s): {', '.join(unknown)}.", extra={"allowed": sorted(FILTERS)}
        )
    items = project.items.all()
    for name, value in filters.items():
        if value is None or value == "":
            continue
        if name == "status":
            if value not in ItemStatus.values:
                raise InvalidInput(f"status: {value!r} is not one of {ItemStatus.values}.")
            items = items.filter(status=value)
        elif name == "hold":
            if value not in HOLD_VALUES:
                raise InvalidInput(f"hold: {value!r} is not one of {sorted(HOLD_VALUES)}.")
            items = items.filter(hold=HOLD_VALUES[value])
        elif name == "cluster":
            try:
                items = items.filter(cluster_id=int(value))
            except (TypeError, ValueError):
                raise InvalidInput(f"cluster: {value!r} is not a cluster id.") from None
        elif name == "tag":
            items = items.filter(tags__project=project, tags__name=str(value))
        else:
            items = items.filter(**{name: str(value)})
    return items


# --- clusters, tags, duplicates -----------------------------------------------------------------


def clustering_run_latest(*, project: Project) -> ClusteringRun | None:
    """The project's newest succeeded clustering run: the one the explorer shows."""
    return project.clustering_runs.filter(status=RunStatus.SUCCEEDED).order_by("-pk").first()


def clustering_run_open(*, project: Project) -> ClusteringRun | None:
    """The run waiting or running for the project, if any."""
    return project.clustering_runs.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).first()


def clusters_of_run(*, run: ClusteringRun) -> QuerySet[Cluster]:
    return run.clusters.order_by("index")


def cluster_get(*, project: Project, cluster_id: int) -> Cluster:
    """A cluster of the project (of any run); NotFound otherwise."""
    cluster = Cluster.objects.filter(project=project, pk=cluster_id).first()
    if cluster is None:
        raise NotFound("Cluster not found.")
    return cluster


def cluster_items(*, cluster: Cluster) -> QuerySet[Item]:
    return cluster.items.order_by("id").prefetch_related("tags")


def tags_with_counts(*, project: Project) -> QuerySet[Tag]:
    """The project's tags with the number of items carrying each, by name."""
    return project.tags.annotate(item_count=Count("items")).order_by("name")


def items_duplicates(*, project: Project) -> QuerySet[Item]:
    """Items held as near-duplicates, with the item each duplicates."""
    return (
        project.items.filter(hold=Hold.DUPLICATE)
        .select_related("duplicate_of")
        .order_by("-duplicate_similarity", "id")
    )
