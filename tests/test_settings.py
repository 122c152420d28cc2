"""Settings from the environment: production refuses weak set-ups, embedded mode is safe."""

from __future__ import annotations

import secrets
import stat
import subprocess
import sys

from tests.support import ROOT, manage, program_env

PRODUCTION = {
    "ANNOTATOR_MODE": "production",
    "ALLOWED_HOSTS": "annotator.example.org",
}


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    env = program_env(tmp_path, **PRODUCTION)

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_production_settings_refuse_to_start_without_allowed_hosts(tmp_path):
    env = program_env(tmp_path, ANNOTATOR_MODE="production", SECRET_KEY=secrets.token_urlsafe(50))
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is not set" in result.stderr


def test_check_deploy_is_clean_on_production_settings(tmp_path):
    env = program_env(
        tmp_path,
        **PRODUCTION,
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_embedded_default_writes_a_key_file_only_its_owner_can_read(tmp_path):
    env = program_env(tmp_path)
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.SECRET_KEY)"
    )

    first = python(code, env)
    second = python(code, env)

    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.stdout.strip() == second.stdout.strip() == key_file.read_text().strip()
    assert len(first.stdout.strip()) >= 50


def test_the_embedded_default_is_sqlite_in_wal_mode_with_a_busy_timeout(tmp_path):
    env = program_env(tmp_path)
    code = (
        "import django; django.setup(); from django.db import connection\n"
        "with connection.cursor() as c:\n"
        "    c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])\n"
        "    c.execute('PRAGMA busy_timeout'); print(c.fetchone()[0])\n"
        "print(connection.settings_dict['NAME'])"
    )

    result = python(code, env)

    assert result.returncode == 0, result.stderr
    mode, timeout, name = result.stdout.split()
    assert (mode, int(timeout)) == ("wal", 30000)
    assert name == str(tmp_path / "annotator.sqlite3")


def test_a_bad_boolean_in_the_environment_fails_loudly(tmp_path):
    result = manage("check", env=program_env(tmp_path, DEBUG="maybe"))
    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


def test_redis_url_switches_celery_to_redis_and_its_absence_to_the_filesystem(tmp_path):
    code = (
        "import django; django.setup(); from annotator.celery import app\n"
        "print(app.conf.broker_url)"
    )
    embedded = python(code, program_env(tmp_path))
    redis = python(code, program_env(tmp_path, REDIS_URL="redis://127.0.0.1:6379/3"))

    assert embedded.stdout.strip() == "filesystem://"
    assert redis.stdout.strip() == "redis://127.0.0.1:6379/3"


THROTTLE_CALLS = (
    "import sys, types, django; django.setup()\n"
    "from labelling.api.throttles import TokenRateThrottle\n"
    "from labelling.models import ApiToken\n"
    "request = types.SimpleNamespace(auth=ApiToken(pk=int(sys.argv[1])))\n"
    "print(' '.join(str(TokenRateThrottle().allow_request(request, None)) for _ in range(2)))\n"
)


def test_cache_url_makes_one_token_count_for_every_process(tmp_path):
    from urllib.parse import urlsplit, urlunsplit

    from tests.support import redis_url

    shared = urlunsplit(urlsplit(redis_url())._replace(path="/14"))
    token = str(secrets.randbelow(10**12) + 10**6)  # a fresh count in a shared cache

    def two_calls(**env: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", THROTTLE_CALLS, token],
            cwd=ROOT,
            env=program_env(tmp_path, ANNOTATOR_TOKEN_RATE="3/day", **env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.split("\n")[-2]

    # Two web processes, four requests with one token, three allowed a day (a window that does
    # not turn over during the test).
    assert [two_calls(CACHE_URL=shared), two_calls(CACHE_URL=shared)] == [
        "True True",
        "True False",
    ]
    # Without a shared cache each process counts alone.
    assert [two_calls(), two_calls()] == ["True True", "True True"]
