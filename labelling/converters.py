"""URL converters: database ids that fit a 64-bit column, so a huge id is a 404, not an error."""

from __future__ import annotations

from django.urls import register_converter
from django.urls.converters import IntConverter

MAX_ID_DIGITS = 18  # every 18-digit number fits a signed 64-bit integer


class IdConverter(IntConverter):
    regex = f"[0-9]{{1,{MAX_ID_DIGITS}}}"


register_converter(IdConverter, "id")
