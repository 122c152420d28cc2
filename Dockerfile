# Production image: gunicorn web, Celery worker and beat all run from it (see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 ANNOTATOR_MODE=production ANNOTATOR_VAR_DIR=/data

RUN groupadd --system app && useradd --system --gid app --home /app app \
    && mkdir -p /app /data && chown app:app /data
WORKDIR /app

COPY pyproject.toml README.md ./
COPY annotator ./annotator
COPY labelling ./labelling
COPY templates ./templates
COPY manage.py ./
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install '.[ml]'
# collectstatic needs settings but no secrets of its own.
RUN SECRET_KEY=build-only ALLOWED_HOSTS=build python manage.py collectstatic --noinput

USER app
EXPOSE 8000
CMD ["gunicorn", "annotator.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "3"]
