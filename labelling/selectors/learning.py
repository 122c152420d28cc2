"""The label-efficiency report: did the queue's order save labels against a random order?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Min

from labelling.models import Item, Project, RunStatus
from labelling.selectors.embeddings import embedding_encoder_latest
from labelling.selectors.projects import schema_current

MIN_TRAIN = 10
MIN_CONTROL = 5
MAX_TRAIN = 2000  # the replay trains a model per point; beyond this it is a batch job


def model_dir(*, project: Project) -> Path:
    """Where a project's training runs save their models (run<pk>-<question key>.joblib)."""
    return Path(settings.VAR_DIR) / "models" / project.slug


def model_latest(*, project: Project) -> Any | None:
    """One model of the project's latest succeeded run (classifiers.Model), or None."""
    from labelling.learning import classifiers

    run = project.training_runs.filter(status=RunStatus.SUCCEEDED).order_by("-pk").first()
    if run is None:
        return None
    for path in sorted(model_dir(project=project).glob(f"run{run.pk}-*.joblib")):
        model = classifiers.load(path)
        if model is not None:
            return model
    return None


def _sizes(n: int) -> list[int]:
    sizes, size = [], MIN_TRAIN
    while size < n:
        sizes.append(size)
        size = int(size * 1.5) + 1
    return [*sizes, n]


def learning_report(*, project: Project) -> dict[str, Any]:
    """Per choice question: macro-F1 on the control slice against the number of labels, for
    the order raters actually labelled in and for the same labels in random order."""
    from labelling.learning.classifiers import model_inputs, reduced
    from labelling.learning.encoders import from_bytes, is_pair
    from labelling.learning.sampling import control_slice
    from labelling.learning.simulate import labels_saved, replay

    schema = schema_current(project=project)
    latest = embedding_encoder_latest(project=project)
    report: dict[str, Any] = {"encoder": latest, "questions": {}}
    if schema is None or latest is None:
        return report
    rows = list(
        Item.objects.filter(project=project, gold__isnull=True, ratings__gt=0,
                            embeddings__encoder=latest)
        .annotate(first_label=Min("annotations__created_at"))
        .order_by("first_label", "pk")
        .values_list("pk", "consensus", "embeddings__vector")
    )  # fmt: skip
    if not rows:
        return report
    ids = [row[0] for row in rows]
    dim = len(rows[0][2]) // 4
    X = model_inputs(np.vstack([from_bytes(row[2], dim) for row in rows]), pair=is_pair(latest))
    # On the directions the latest run's models read (found from all the project's items);
    # without them, on these items' own strongest directions. Labels unused either way, so
    # neither order's replay is favoured.
    model = model_latest(project=project)
    basis = None if model is None else model.projection
    if basis is not None and basis.shape[0] == X.shape[1]:
        X = X @ basis
    else:  # no run yet, one on too few items to reduce, or vectors of another encoder since
        X = reduced(X, settings.ANNOTATOR_FEATURE_DIMENSIONS)
    control = control_slice(ids, project.control_share)
    for question in schema.parsed().questions:
        if question.type != "choice" or question.scope != "conversation":
            continue
        y = np.array([(row[1].get(question.key) or {}).get("value") for row in rows], dtype=object)
        known = np.array([value is not None for value in y])
        train, test = known & ~control, known & control
        entry: dict[str, Any] = {"labels": int(train.sum()), "control_items": int(test.sum())}
        if train.sum() < MIN_TRAIN or test.sum() < MIN_CONTROL:
            entry["note"] = (
                f"Needs {MIN_TRAIN} labelled items outside the control slice and {MIN_CONTROL} "
                "inside it."
            )
        else:
            train_idx = np.flatnonzero(train)[:MAX_TRAIN]
            curves = replay(
                X[train_idx], y[train_idx].astype(str), X[test], y[test].astype(str),
                classes=list(question.option_values), sizes=_sizes(len(train_idx)),
            )  # fmt: skip
            entry.update(curves=curves, summary=labels_saved(curves))
        report["questions"][question.key] = entry
    return report
