"""docker-compose.yml for production, checked by structure (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_it_defines_every_production_service():
    services = compose()["services"]
    assert {"db", "redis", "migrate", "web", "worker", "worker-ml", "beat"} <= set(services)
    assert services["db"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")


def test_web_runs_gunicorn_and_workers_take_the_default_and_ml_queues():
    services = compose()["services"]
    assert services["web"]["command"][0] == "gunicorn"
    assert "annotator.wsgi:application" in services["web"]["command"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "annotator", "worker"]
    queue = services["worker"]["command"].index("--queues") + 1
    ml_queue = services["worker-ml"]["command"].index("--queues") + 1
    assert services["worker"]["command"][queue] == "default"
    assert services["worker-ml"]["command"][ml_queue] == "ml"
    assert services["beat"]["command"][:4] == ["celery", "-A", "annotator", "beat"]


def test_app_services_share_a_production_environment_with_required_secrets():
    services = compose()["services"]
    for name in ("migrate", "web", "worker", "worker-ml", "beat"):
        env = services[name]["environment"]
        assert env["ANNOTATOR_MODE"] == "production", name
        # `${VAR:?message}` makes compose refuse to start when the secret is missing.
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), name
        assert "${POSTGRES_PASSWORD:?" in env["DATABASE_URL"], name
        assert env["REDIS_URL"].startswith("redis://redis:6379"), name
        assert services[name]["build"] == "."


def test_services_have_healthchecks_and_start_in_order():
    services = compose()["services"]
    for name in ("db", "redis", "web", "worker", "worker-ml"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("web", "worker", "worker-ml", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


def test_data_lives_in_named_volumes():
    spec = compose()
    assert {"pgdata", "redisdata", "artifacts"} <= set(spec["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in spec["services"]["db"]["volumes"]


def test_the_image_builds_from_the_repository_with_static_files_collected():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in ("annotator", "labelling", "templates"):
        assert f"COPY {folder} ./{folder}" in dockerfile
    assert "torch==2.13.0" in dockerfile
    assert "collectstatic" in dockerfile
    assert "USER app" in dockerfile
