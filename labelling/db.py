"""Model instances from fixed, parameterised SELECTs, for the few reads on the queue's hot path.

The queue's next and submit run on every rating, and for a one-row read the ORM spent several
times more CPU building the query than the database spent answering it. These statements are
constants (no user text is ever spliced into them: values go in as parameters), and rows come
back through the same converters the ORM applies, so JSON, booleans and datetimes read as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from django.db import connection
from django.db.models import Model
from django.db.models.sql import Query

M = TypeVar("M", bound=Model)


def instances(model: type[M], sql: str, params: Sequence | Mapping) -> list[M]:
    """Rows of `sql` as `model` instances; columns that are not the model's become attributes."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = [column[0] for column in cursor.description]
        rows = cursor.fetchall()
    by_column = {field.column: field for field in model._meta.concrete_fields}
    fields = [by_column.get(column) for column in columns]
    compiler = connection.ops.compiler("SQLCompiler")(Query(model), connection, connection.alias)
    converters = compiler.get_converters(
        [field.get_col(model._meta.db_table) if field else None for field in fields]
    )
    if converters:
        rows = compiler.apply_converters(rows, converters)
    # from_db takes values in the model's field order, which need not be the table's.
    at = {column: i for i, column in enumerate(columns)}
    present = [field for field in model._meta.concrete_fields if field.column in at]
    names = [field.attname for field in present]
    positions = [at[field.column] for field in present]
    extras = [(column, i) for i, column in enumerate(columns) if fields[i] is None]
    found = []
    for values in rows:
        instance = model.from_db(connection.alias, names, [values[i] for i in positions])
        for column, i in extras:
            setattr(instance, column, values[i])
        found.append(instance)
    return found


def first(model: type[M], sql: str, params: Sequence | Mapping) -> M | None:
    found = instances(model, sql, params)
    return found[0] if found else None
