"""annotator.postgresql: Django's health check without a round trip while nothing is wrong."""

from __future__ import annotations

import time

import pytest
from django.db import connection, connections
from django.db.backends.postgresql import base as django_postgresql

pytestmark = [
    pytest.mark.django_db(transaction=True),  # an idle connection, as between two requests
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="PostgreSQL's backend (CI runs on it)"
    ),
]


@pytest.fixture
def checks(monkeypatch):
    """Calls of Django's own check (the `SELECT 1` round trip)."""
    calls = []
    original = django_postgresql.DatabaseWrapper.is_usable

    def counted(self):
        calls.append(self.alias)
        return original(self)

    monkeypatch.setattr(django_postgresql.DatabaseWrapper, "is_usable", counted)
    return calls


def _start_request() -> None:
    connection.health_check_done = False  # what Django does when a request starts


def test_settings_use_the_backend():
    assert type(connections["default"]).__module__ == "annotator.postgresql.base"
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True


def test_a_healthy_idle_connection_is_checked_without_a_statement(checks):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    pid = connection.connection.info.backend_pid

    _start_request()
    connection.close_if_health_check_failed()

    assert checks == []
    assert connection.connection is not None and connection.connection.info.backend_pid == pid


def test_a_connection_the_server_ended_is_replaced_before_the_request_uses_it(checks):
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    other = {key: params[key] for key in ("host", "port", "user", "dbname") if params.get(key)}
    with psycopg.connect(**other, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)  # the server's goodbye reaches the socket

    _start_request()
    connection.close_if_health_check_failed()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        new_pid = cursor.fetchone()[0]

    assert checks == ["default"]  # the socket was readable: Django's check ran, and failed
    assert new_pid != pid
