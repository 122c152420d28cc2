"""Helpers for tests that run the real programs: manage.py, gunicorn, Celery workers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def program_env(var_dir: Path, **overrides: str | None) -> dict[str, str]:
    """The environment of a child process: this one's, minus test-only and mode variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ANNOTATOR_MODE", "DEBUG"):
        env.pop(name, None)
    env.update(
        ANNOTATOR_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="annotator.settings",
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def shell(code: str, *, env: dict[str, str], timeout: float = 120) -> str:
    """Run Python in `manage.py shell` with the child's settings; its printed output."""
    result = manage("shell", "-v", "0", "-c", code, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def celery_worker(*, env: dict[str, str], queues: str) -> subprocess.Popen:
    """A real Celery worker in a child process, its log captured for the test to read."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "annotator",
            "worker",
            "--queues",
            queues,
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def redis_url() -> str:
    """The Redis the suite uses; it must be reachable (CI fails loudly when it is not)."""
    import redis

    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.exceptions.ConnectionError as exc:
        raise AssertionError(
            f"Redis is not reachable at {url} ({exc}). Start it, or set REDIS_URL."
        ) from None
    return url


DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped afterwards). It must be reachable: the suite
    uses DATABASE_URL's server when that is PostgreSQL, else the local one."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgres://", "postgresql://")):
        base = DEFAULT_POSTGRES_URL
    parts = urlsplit(base)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    name = f"annotator_it_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise AssertionError(
            f"PostgreSQL is not reachable at {admin_url} ({exc}); these tests need it."
        ) from None
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def throwaway_sqlite(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'child.sqlite3'}"


def throwaway_database(tmp_path: Path):
    """A database for child processes of the engine the suite runs on."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return postgres_database()
    return throwaway_sqlite(tmp_path)


def wait_until(check, *, timeout: float, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {what}; last error: {last_error}")
