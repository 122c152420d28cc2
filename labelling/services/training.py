"""Training runs: a classifier per question over the embeddings, and the queue order it writes.

A run is a row claimed by a conditional UPDATE, so a redelivered task (a worker killed mid-run)
takes it up again and a finished run is never run twice. Everything a run writes is derived
from the database and written in one transaction at the end, so a killed worker leaves no
partial state; model files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from labelling import db
from labelling.models import Annotation, Item, Project, RunStatus, TrainingRun
from labelling.selectors.embeddings import embedding_encoder_latest
from labelling.selectors.learning import model_dir
from labelling.selectors.projects import schema_current
from labelling.services.runs import run_execute, run_request

log = logging.getLogger(__name__)

MIN_LABELS = 10  # per question, before a classifier is worth training
DEFAULT_BATCH = 10  # the cold start's and badge's batch when a project retrains only on demand
MIN_CONTROL = 5  # labelled control items needed to report a score
TRAINED_TYPES = ("choice", "multi_choice", "rating")
# The submit path asks for a check on every CHECK_EVERY-th annotation (by id): no query and
# no broker message on the other submits, and a run still starts within a few labels of K.
CHECK_EVERY = 10
WRITE_CHUNK = 10_000  # rows per executemany when a run writes priorities and predictions (SQLite)


def training_run_request(*, project: Project, trigger: str = "manual") -> TrainingRun:
    """Queue a run, or return the one already waiting or running for the project."""
    from labelling.tasks import ml_training_run as ml_training_run_task

    return run_request(TrainingRun, project=project, trigger=trigger, task=ml_training_run_task)


def training_run_maybe(*, project: Project) -> TrainingRun | None:
    """Queue a run when `retrain_every` ratings arrived since the last run was queued.

    Debounced twice: a run waiting or running absorbs every trigger (one open run per project,
    a constraint), and the next one needs K more ratings after it.
    """
    if not project.retrain_every:
        return None
    last = project.training_runs.exclude(status=RunStatus.FAILED).order_by("-pk").first()
    if last is not None and last.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        return None
    ratings = Annotation.objects.filter(project=project)
    if last is not None:
        # A run reads the labels when it starts: those before that are in it.
        ratings = ratings.filter(created_at__gt=last.started_at or last.created_at)
    if ratings.count() < project.retrain_every:
        return None
    return training_run_request(project=project, trigger="labels")


def training_check_after_submit(*, project: Project, annotation: Annotation) -> None:
    """Called by the submit path: on every CHECK_EVERY-th annotation, check for a run once the
    transaction commits. Costs the other submits nothing (no query, no message)."""
    if not project.retrain_every or annotation.pk % CHECK_EVERY:
        return
    from labelling.tasks import ml_training_maybe as ml_training_maybe_task

    project_id = project.pk
    transaction.on_commit(lambda: ml_training_maybe_task.delay(project_id))


def training_after_embedding(*, project: Project) -> TrainingRun | None:
    """New vectors arrived: queue a run so new items get a place in the queue (a diverse cold
    start before the first model, the model's order after)."""
    if not project.retrain_every:
        return None
    return training_run_request(project=project, trigger="embeddings")


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Claim and carry out a run; None when it is already finished (or gone)."""
    return run_execute(TrainingRun, run_id=run_id, work=_train)


def _cluster_count(items: int) -> int:
    # Enough regions to spread a rater's next dozens of items, few enough to stay meaningful.
    return max(2, min(50, int(np.sqrt(items / 10))))


def _label(question, value):
    """A consensus value as the question asks it now (a rating as an integer, a multi_choice
    answer as its known options in schema order); None for one the current schema cannot
    read, left by an earlier version (an option since removed, another question type)."""
    if value is None:
        return None
    if question.type == "rating":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        value = int(round(value))
        return value if 1 <= value <= question.scale else None
    if question.type == "multi_choice":
        if not isinstance(value, list):
            return None
        return [option for option in question.option_values if option in value]
    return value if value in question.option_values else None


def _hashable(values: list) -> list:
    """multi_choice answers (lists) as text, so answers compare and count as wholes."""
    return [json.dumps(v) if isinstance(v, list) else v for v in values]


def _varies(kind: str, values: list, classes: list) -> bool:
    """Whether the labels give a model something to tell apart: two classes seen, or for a
    multi_choice question some label both chosen and not chosen."""
    from labelling.learning import classifiers

    if kind != "multi_choice":
        return len(set(values)) >= 2
    chosen = classifiers.indicator(values, classes).sum(axis=0)
    return bool(((chosen > 0) & (chosen < len(values))).any())


def _softmaxes(model, probs: np.ndarray) -> list[np.ndarray]:
    """One question's probabilities, one array per softmax: a choice or rating question's own
    matrix, and one binary column per label of a multi_choice question (each label is its own
    logistic model; sampling reads a column as a yes/no problem's yes)."""
    if model.kind != "multi_choice":
        return [probs]
    return [probs[:, column] for column in range(probs.shape[1])]


def _badge_inputs(models: dict, probs: dict) -> list[np.ndarray]:
    """Every question's softmaxes (_softmaxes), as badge, ALFA-Mix and margin read them."""
    return [part for key, model in models.items() for part in _softmaxes(model, probs[key])]


def _alfamix_flips(models: dict, X: np.ndarray, train: dict, asked: np.ndarray) -> np.ndarray:
    """Whether some question's model changes its answer for each ``asked`` item (a mask: the
    items still to label; the others never flip) when the item's features are mixed halfway
    with the mean features of a class among that question's training rows (``train``: key ->
    (rows, labels); a multi_choice question's: of each label's rows and of the rows with none):
    the candidates ALFA-Mix spreads by k-means.

    A calibrated model answers here as its class-balanced fit decides (classifiers.predict),
    as the replay measured ALFA-Mix (learning/simulate.py): a calibrated argmax leans to the
    frequent classes, and on the sample sets it lowered the share of items that flip by 0.44
    and 0.54 on average (truthfulqa, toldbr)."""
    from labelling.learning import classifiers, sampling

    flips = np.zeros(X.shape[0], dtype=bool)
    where = np.flatnonzero(asked)
    for key, model in models.items():
        rows, values = train[key]
        if model.kind == "multi_choice":
            # A mean per label (of the rows that chose it) and one of the rows that chose none.
            chosen = classifiers.indicator(values, model.classes).astype(bool)
            groups = [*chosen.T, ~chosen.any(axis=1)]
        else:
            values = np.asarray(values, dtype=object)
            groups = [values == c for c in model.classes]
        means = np.stack([X[rows[group]].mean(axis=0) for group in groups if group.any()])
        flips[where] |= classifiers.mixing_flips(model, X[where], means, sampling.ALFAMIX_ALPHA)
    return flips


def _digest(values: list[str]) -> str:
    return hashlib.sha256("\n".join(values).encode()).hexdigest()


_VECTORS_SQL = """
SELECT e.item_id, e.vector, e.prompt_hash, i.hold
FROM labelling_embedding e JOIN labelling_item i ON i.id = e.item_id
WHERE i.project_id = %s AND e.encoder = %s AND i.gold IS NULL ORDER BY e.item_id
"""


def _dataset(project: Project):
    """(item ids, vectors, consensus per item, encoder, prompt hash per item, held mask) for
    the embedded non-gold items."""
    latest = embedding_encoder_latest(project=project)
    rows = db.binary_rows(_VECTORS_SQL, [project.pk, latest]) if latest else []
    if not rows:
        return [], np.zeros((0, 0), np.float32), [], latest, [], np.zeros(0, dtype=bool)
    ids = [row[0] for row in rows]
    prompts = [row[2] for row in rows]
    held = np.array([bool(row[3]) for row in rows], dtype=bool)  # never served
    # One buffer and one reshape: ~50x faster than a frombuffer per row at 100k items.
    X = np.frombuffer(b"".join(bytes(row[1]) for row in rows), dtype="<f4")
    X = X.reshape(len(ids), -1).astype(np.float32, copy=False)
    # Consensus only for rated items: at 100k items most have none, and JSON costs to parse.
    labelled = dict(
        Item.objects.filter(project=project, gold__isnull=True, ratings__gt=0).values_list(
            "pk", "consensus"
        )
    )
    consensus = [labelled.get(pk) or {} for pk in ids]
    return ids, X, consensus, latest, prompts, held


def _predictions_json(
    models: dict, decide_by: dict, shown: dict, n: int, control: np.ndarray
) -> list[str]:
    """The JSON of each item's predictions {question: {"value", "probabilities"}}; "{}" for
    control items, whose labels measure the model and so must not be anchored by it. The value
    is the argmax of ``decide_by`` (the class-balanced model's probabilities, as
    classifiers.predict decides; for multi_choice, the list of options at 0.5 or more), the
    probabilities ``shown``'s (calibrated): a suggestion may name a class less likely than
    another but far more likely than its share of the labels.

    Formatted from a template per question: a dict and json.dumps per item took 6x longer at
    100k items.
    """
    columns = []
    for key, model in models.items():
        p = np.round(np.asarray(shown[key], dtype=np.float64), 3)
        values = [json.dumps(c.item() if hasattr(c, "item") else c) for c in model.classes]
        names = [json.dumps(str(c)) for c in model.classes]
        head = json.dumps(key) + ':{"value":'
        template = ',"probabilities":{{' + ",".join(f"{name}:{{}}" for name in names) + "}}}}"
        if model.kind == "multi_choice":
            # The options the model would choose (each label's balanced probability >= 0.5).
            chosen = (np.asarray(decide_by[key]) >= 0.5).tolist()
            decided = [
                json.dumps([c for c, on in zip(model.classes, row, strict=True) if on])
                for row in chosen
            ]
        else:
            decided = [values[b] for b in np.asarray(decide_by[key]).argmax(axis=1).tolist()]
        columns.append(
            [
                head + value + template.format(*row)
                for value, row in zip(decided, p.tolist(), strict=True)
            ]
        )
    rows = (
        ["{" + ",".join(parts) + "}" for parts in zip(*columns, strict=True)]
        if columns
        else ["{}"] * n
    )
    for index in np.flatnonzero(control):
        rows[index] = "{}"
    return rows


def _write_scores(ids: list[int], priority: np.ndarray, predictions: list[str]) -> None:
    """Set priority and predictions of many items inside the caller's transaction.

    PostgreSQL: COPY into a temporary table, then one UPDATE ... FROM it (bulk_update's CASE
    WHEN per row cost ~5 s at 20k items; COPY beat an UPDATE ... FROM unnest(arrays) by ~30%
    at 100k). SQLite: executemany of a prepared UPDATE, in chunks.
    """
    assert Item._meta.db_table == "labelling_item", "update the statements below"
    values = priority.astype(float).tolist()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Dropped at commit; a second run inside one outer transaction finds it still there.
            cursor.execute("DROP TABLE IF EXISTS pg_temp.training_scores")
            cursor.execute(
                "CREATE TEMPORARY TABLE training_scores (id bigint, p float8, j jsonb) "
                "ON COMMIT DROP"
            )
            with cursor.copy("COPY training_scores (id, p, j) FROM STDIN") as copy:
                for row in zip(ids, values, predictions, strict=True):
                    copy.write_row(row)
            cursor.execute(
                "UPDATE labelling_item AS item SET priority = s.p, predictions = s.j "
                "FROM training_scores AS s WHERE item.id = s.id"
            )
            return
        for start in range(0, len(ids), WRITE_CHUNK):
            end = start + WRITE_CHUNK
            cursor.executemany(
                "UPDATE labelling_item SET priority = %s, predictions = %s WHERE id = %s",
                list(zip(values[start:end], predictions[start:end], ids[start:end], strict=True)),
            )


def _train(run: TrainingRun) -> None:
    from labelling.learning import classifiers, sampling
    from labelling.learning.encoders import is_pair

    project = run.project
    started = time.perf_counter()
    timings: dict[str, float] = {}
    mark = started

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[name] = round(now - mark, 3)
        mark = now

    schema = schema_current(project=project)
    questions = [
        q
        for q in (schema.parsed().questions if schema else ())
        if q.type in TRAINED_TYPES and q.scope == "conversation"
    ]
    ids, X, consensus, encoder, prompts, held = _dataset(project)
    # Pairs become [p, r, p*r, |p−r|]: the models, badge's density and the cold start's
    # clusters all see the reply beside its prompt.
    X = classifiers.model_inputs(X, pair=is_pair(encoder))
    strategy = project.learning_strategy
    # A near copy of a labelled reply ("I have no comment.") is told by the replies' own
    # vectors, taken before the projection below (badge's and ALFA-Mix's rule).
    replies = None
    if strategy in ("badge", "badge_alfamix"):
        replies = np.ascontiguousarray(classifiers.reply_part(X, pair=is_pair(encoder)))
    # Everything after reads the features on the items' strongest directions (see
    # classifiers.FEATURE_DIMENSIONS): the models, and the queue's orders through them.
    dimensions = settings.ANNOTATOR_FEATURE_DIMENSIONS
    basis = classifiers.projection(X, dimensions)
    if basis is not None:
        X = X @ basis
    lap("load")
    labels: dict[str, list] = {}
    for question in questions:
        labels[question.key] = [
            _label(question, (c.get(question.key) or {}).get("value")) for c in consensus
        ]
    labelled = sum(1 for c in consensus if c)
    per_item = [[labels[key][i] for key in sorted(labels)] for i in range(len(ids))]
    # The strategy, the control share and the vectors' encoder (which changes with the
    # embedding text) are part of the data: changing any must retrain and reorder the queue.
    digest = classifiers.data_hash(
        [*ids, "settings"],
        [
            *per_item,
            # Prompt hashes may arrive after the vectors (kept since migration 0011).
            [
                project.learning_strategy,
                project.control_share,
                encoder,
                _digest(prompts),
                dimensions,
            ],
        ],
    )
    previous = project.training_runs.filter(status=RunStatus.SUCCEEDED).order_by("-pk").first()
    if previous is not None and previous.data_hash == digest:
        TrainingRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SKIPPED, data_hash=digest, labels=labelled,
            note=f"Nothing changed since run {previous.pk}.", finished_at=timezone.now(),
        )  # fmt: skip
        return
    control = sampling.control_slice(ids, project.control_share)
    metrics: dict[str, dict] = {}
    uncertainty = np.zeros(len(ids))
    trained = 0
    models = {}
    probs: dict[str, np.ndarray] = {}
    shown: dict[str, np.ndarray] = {}  # calibrated, for suggestions
    train_rows: dict[str, tuple[np.ndarray, list]] = {}  # ALFA-Mix's class means
    for question in questions:
        y = labels[question.key]
        known = np.array([value is not None for value in y], dtype=bool)
        train_mask = known & ~control
        classes = (
            list(range(1, question.scale + 1)) if question.type == "rating"
            else list(question.option_values)
        )  # fmt: skip
        train_y = [y[i] for i in np.flatnonzero(train_mask)]
        if len(train_y) < MIN_LABELS or not _varies(question.type, train_y, classes):
            metrics[question.key] = {"trained": False, "labels": len(train_y)}
            continue
        model = classifiers.train(X[train_mask], train_y, kind=question.type, classes=classes)
        model.projection = basis  # saved with it: what a new item's features go through
        models[question.key] = model
        # The queue reads the class-balanced model's probabilities, as the replay measured;
        # a suggestion shows the calibrated ones beside the balanced decision.
        probs[question.key] = classifiers.balanced_proba(model, X)
        # (Per label for multi_choice: one label may be calibrated and another not yet.)
        shown[question.key] = classifiers.predict_proba(model, X)
        train_rows[question.key] = (np.flatnonzero(train_mask), train_y)
        if strategy != "random":
            # Hybrid mixes in density and clusters once, over the questions' mean entropy;
            # badge orders by the probabilities themselves (below) and ignores this sum.
            per_question = strategy if strategy in sampling.UNCERTAINTY else "entropy"
            # A multi_choice question's labels are yes/no questions of their own: the mean
            # of their uncertainties.
            uncertainty += np.mean(
                [
                    sampling.priorities(column, strategy=per_question)
                    for column in _softmaxes(model, probs[question.key])
                ],
                axis=0,
            )
        trained += 1
        entry = {"trained": True, "labels": len(train_y)}
        test = known & control
        if test.sum() >= MIN_CONTROL:
            predicted = classifiers.predict(model, X[test])
            truth = [y[i] for i in np.flatnonzero(test)]
            if question.type == "multi_choice":  # macro over the labels, each a yes/no
                truth = classifiers.indicator(truth, classes)
            entry["control_macro_f1"] = round(classifiers.macro_f1(truth, predicted), 4)
            entry["control_items"] = int(test.sum())
        metrics[question.key] = entry
    lap("train")
    rng = np.random.default_rng(run.pk)
    use_model = trained and strategy != "random"
    batch = project.retrain_every or DEFAULT_BATCH  # labels between two runs: one "batch"
    mates = ""  # how prompt-mates were placed, if any
    phase = "badge"  # badge_alfamix's part: badge, then alfamix, then margin
    if use_model and strategy in ("badge", "badge_alfamix"):
        labelled_mask = np.array([bool(c) for c in consensus], dtype=bool)
        to_label = ~control & ~held & ~labelled_mask
        # A near copy of a labelled reply ("I have no comment.") waits until last.
        known = np.flatnonzero(labelled_mask)[-sampling.NEAR_COPY_LABELLED :]
        # Once every trained question's model has seen enough labels for its classes' means to
        # say something, ALFA-Mix; once they know the pool, their own doubt.
        if strategy == "badge_alfamix":
            phase = sampling.badge_alfamix_phase(min(rows.size for rows, _ in train_rows.values()))
        if phase == "alfamix":
            flips = _alfamix_flips(models, X, train_rows, to_label)
            # The share of the items still to label that flip for some question: what
            # k-means would cluster. Shown with the run's timings.
            timings["alfamix_flip_share"] = round(float(flips[to_label].mean()), 3) if (
                to_label.any()
            ) else 0.0  # fmt: skip
            if not sampling.flips_single_out(flips, to_label):
                # Most of the items flip (a class far from the others, or models still
                # vague): k-means over them would be k-means over most of the pool, blind to
                # what the models doubt, so this batch is BADGE's.
                phase = "badge, most items flip"
        if phase == "margin":
            head = 3 * batch  # as in the replay: prompt-mates placed among three batches' picks
            # One binary column per multi_choice label, as for badge: its labels are no softmax.
            priority = sampling.margin_priorities(_badge_inputs(models, probs), candidates=to_label)
        elif phase == "alfamix":
            # The items whose predicted class changes when mixed halfway with a labelled
            # class's mean, the one nearest each k-means centre first (3 centres per batch, as
            # in the replay).
            head = 3 * batch
            priority = sampling.alfamix_priorities(
                _badge_inputs(models, probs), flips, X, centres=head, seed=run.pk,
                candidates=to_label,
                replies=replies, labelled_replies=replies[known],
            )  # fmt: skip
        else:
            # Uncertain (long gradients), typical (density) and diverse (k-means++ over
            # gradient embeddings): the next `batch` items served are the batch BADGE would
            # pick, among the items still to label. The replay in learning/simulate.py uses
            # the same function.
            head = max(sampling.BADGE_ORDERED, 2 * batch)  # places laid out by k-means++
            priority = sampling.badge_priorities(
                _badge_inputs(models, probs), X, seed=run.pk, candidates=to_label,
                ordered=head, replies=replies, labelled_replies=replies[known],
            )  # fmt: skip
        groups = sampling.sibling_groups(prompts)
        if (groups >= 0).any():
            order = np.argsort(-priority, kind="stable")
            if sampling.siblings_disagree(groups, [_hashable(v) for v in labels.values()]):
                # Where labels differ between replies to one prompt more than between any two
                # items (preference pairs), each of the first picks is followed by a
                # prompt-mate still to label: side by side they show what tells replies apart.
                order = sampling.pair_siblings(order, groups, to_label, head=head)
                mates = "prompt-mates together"
            else:
                # Where the prompt decides much of the label, another reply to a prompt
                # already labelled teaches little: the first picks go to other prompts.
                order = sampling.spread_siblings(order, groups, labelled_mask, head, to_label)
                mates = "prompts spread"
            priority = sampling.order_priorities(order)
    elif use_model and strategy != "hybrid":
        priority = uncertainty / trained
    elif use_model:
        clusters = sampling.kmeans_clusters(X, k=_cluster_count(len(ids)), seed=run.pk)
        priority = sampling.hybrid_priorities(
            uncertainty / trained, X=X, clusters=clusters, seed=run.pk
        )
    elif len(ids) and strategy != "random":
        # Cold start, before the first model: the items nearest to k-means centres (one
        # batch's worth, as in the replay), then k-means regions round-robin, the most central
        # item of each first, so the first labels cover the pool instead of one source or
        # topic (and give the first model every kind of item to learn from).
        rows = np.flatnonzero(~control) if (~control).any() else np.arange(len(ids))
        order = sampling.cold_start_order(X[rows], first=min(batch, rows.size), seed=run.pk)
        priority = np.zeros(len(ids))
        priority[rows[order]] = (rows.size - np.arange(rows.size)) / rows.size
    else:
        # Random by choice; never the import order, which would serve one source first.
        priority = rng.random(len(ids))
    # The control slice keeps a random order, whatever the model thinks: an honest test set.
    priority[control] = rng.random(int(control.sum()))
    lap("score")
    predictions = _predictions_json(models, probs, shown, len(ids), control)
    directory = model_dir(project=project)
    directory.mkdir(parents=True, exist_ok=True)
    for key, model in models.items():
        classifiers.save(model, directory / f"run{run.pk}-{key}.joblib")
    lap("predictions")
    with transaction.atomic():
        _write_scores(ids, priority, predictions)
        lap("write")
        elapsed = round(time.perf_counter() - started, 3)
        order = "model" if use_model else ("random" if strategy == "random" else "cold start")
        if use_model:
            part = {
                "alfamix": "ALFA-Mix", "margin": "smallest margin",
                "badge, most items flip": "BADGE (most items flip under ALFA-Mix)",
            }.get(phase, "")  # fmt: skip
            parts = ("model", part, mates)
            order = ", ".join(part for part in parts if part)
        TrainingRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SUCCEEDED, data_hash=digest, labels=labelled, metrics=metrics,
            timings={"seconds": elapsed, "items": len(ids), "encoder": encoder, "order": order,
                     **timings},
            note=f"Trained {trained} classifier(s) on {labelled} labelled item(s); "
                 f"reordered {len(ids)} item(s) ({order} order).",
            finished_at=timezone.now(),
        )  # fmt: skip
    _prune_models(project)


KEEP_MODELS_OF_RUNS = 3  # succeeded runs whose saved models stay on disk, the newest


def _prune_models(project: Project) -> None:
    """Delete the saved models of all but the newest KEEP_MODELS_OF_RUNS succeeded runs (and
    of runs that never succeeded): a run every 10 labels would otherwise pile them up."""
    keep = set(
        project.training_runs.filter(status=RunStatus.SUCCEEDED)
        .order_by("-pk")
        .values_list("pk", flat=True)[:KEEP_MODELS_OF_RUNS]
    )
    for path in model_dir(project=project).glob("run*-*.joblib"):
        number = path.name[3:].split("-", 1)[0]
        if number.isdigit() and int(number) not in keep:
            try:
                path.unlink(missing_ok=True)
            except OSError as error:  # the run has succeeded; a stale file must not undo it
                log.warning("could not delete the old model %s: %s", path, error)
