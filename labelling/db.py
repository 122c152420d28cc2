"""Model instances from fixed, parameterised SELECTs, for the few reads on the queue's hot path.

The queue's next and submit run on every rating, and for a one-row read the ORM spent several
times more CPU building the query than the database spent answering it. These statements are
constants: their column lists come from the models (`columns`), and values go in as parameters,
never spliced into the text. Rows come back through the same converters the ORM applies, so
JSON, booleans and datetimes read as usual; the converters are looked up once per model.

    SQL = f"SELECT {db.columns(Item, 'i')}, {db.columns(Project, 'p')} FROM ..."
    item, project = db.first_row(SQL, params, Item, Project)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model

M = TypeVar("M", bound=Model)


def columns(model: type[Model], alias: str = "") -> str:
    """The model's columns in field order, for a SELECT list: `alias."col", ...`."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{field.column}"' for field in model._meta.concrete_fields)


# (connection alias, model) -> (attribute names in field order, [(position, converters, col)])
_LAYOUTS: dict[tuple[str, type[Model]], tuple[list[str], list[tuple[int, list, Any]]]] = {}


def _layout(connection, model: type[Model]) -> tuple[list[str], list[tuple[int, list, Any]]]:
    key = (connection.alias, model)
    layout = _LAYOUTS.get(key)
    if layout is None:
        fields = model._meta.concrete_fields
        converters = []
        for position, field in enumerate(fields):
            # As SQLCompiler.get_converters: the backend's converters, then the field's.
            col = field.get_col(model._meta.db_table)
            found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            if found:
                converters.append((position, found, col))
        layout = _LAYOUTS[key] = ([field.attname for field in fields], converters)
    return layout


def rows(
    sql: str,
    params: Sequence | Mapping,
    *models: type[Model],
    extras: Sequence[str] = (),
) -> list[tuple]:
    """Each row of `sql` as one instance per model, in order.

    The SELECT list is `columns(model)` for each model, then one column per name in `extras`,
    which become attributes of the first model's instance.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    layouts = [_layout(connection, model) for model in models]
    width = sum(len(names) for names, _ in layouts) + len(extras)
    found = []
    for row in fetched:
        if len(row) != width:
            raise ValueError(f"The statement returns {len(row)} columns, not {width}.")
        start = 0
        built = []
        for model, (names, converters) in zip(models, layouts, strict=True):
            values = list(row[start : start + len(names)])
            for position, functions, col in converters:
                value = values[position]
                for function in functions:
                    value = function(value, col, connection)
                values[position] = value
            built.append(model.from_db(connection.alias, names, values))
            start += len(names)
        for name, value in zip(extras, row[start:], strict=True):
            setattr(built[0], name, value)
        found.append(tuple(built))
    return found


def first_row(
    sql: str, params: Sequence | Mapping, *models: type[Model], extras: Sequence[str] = ()
) -> tuple | None:
    found = rows(sql, params, *models, extras=extras)
    return found[0] if found else None


def instances(
    model: type[M], sql: str, params: Sequence | Mapping, *, extras: Sequence[str] = ()
) -> list[M]:
    """Each row of `sql` as a `model` instance."""
    return [found[0] for found in rows(sql, params, model, extras=extras)]


def execute(sql: str, params: Sequence | Mapping) -> int:
    """Run a fixed UPDATE or DELETE; the number of rows it changed."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def prepared(model: type[Model], field: str, value: Any) -> Any:
    """`value` as the ORM would send it for `model.field`: JSON, datetimes and the like."""
    connection = connections[DEFAULT_DB_ALIAS]
    return model._meta.get_field(field).get_db_prep_save(value, connection)


def first(
    model: type[M], sql: str, params: Sequence | Mapping, *, extras: Sequence[str] = ()
) -> M | None:
    """The first row of `sql` as a `model` instance, or None."""
    found = rows(sql, params, model, extras=extras)
    return found[0][0] if found else None


def binary_rows(sql: str, params: Sequence | Mapping) -> list[tuple]:
    """All rows of `sql` as the driver returns them, fetched in PostgreSQL's binary format
    where it is the database: a bytea then arrives as its bytes rather than as hex text twice
    its size (100k stored vectors of 3 KB: ~3 s less to read). Elsewhere a plain fetch."""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    import psycopg

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, binary=True)
        return cursor.fetchall()
