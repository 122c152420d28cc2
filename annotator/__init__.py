"""annotator: a human labelling server for LLM conversations."""

from annotator.celery import app as celery_app

__all__ = ["celery_app"]
