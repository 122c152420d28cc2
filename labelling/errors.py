"""Typed application errors, rendered by one handler as {message, code, extra}."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    code = "error"
    http_status = 400
    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, extra: dict[str, Any] | None = None):
        self.message = message or self.default_message
        self.extra = extra or {}
        super().__init__(self.message)


class NotFound(ApplicationError):
    code = "not_found"
    http_status = 404
    default_message = "Not found."


class Forbidden(ApplicationError):
    code = "forbidden"
    http_status = 403
    default_message = "You do not have permission to do this."


class InvalidInput(ApplicationError):
    code = "invalid"
    http_status = 400


class InvalidImport(ApplicationError):
    """The import was refused as a whole; `extra["errors"]` lists [{line, field, message}]."""

    code = "invalid_import"
    http_status = 400


class Conflict(ApplicationError):
    code = "conflict"
    http_status = 409


class PayloadTooLarge(ApplicationError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedFormat(ApplicationError):
    code = "unsupported_format"
    http_status = 415


class InvalidSchema(ApplicationError):
    """A label schema failed validation; `extra["errors"]` lists [{question, field, message}]."""

    code = "invalid_schema"
    http_status = 400
