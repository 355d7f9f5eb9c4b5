"""Structured logs: one JSON object per line, so a log shipper (CloudWatch, Loki, jq) can query fields.

The API logs one line per request with `request_id`, `method`, `path`, `status` and `elapsed_ms`;
anything passed as `extra=` to a logging call becomes a field of its line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from mediasearch.core.settings import get_settings

# Attributes every LogRecord has; whatever else a record carries came from `extra=` and is logged.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_MARK = "_mediasearch_json"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: ts, level, logger, message, the extras, then exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            # Stack traces belong in the log (where operators look), never in a response.
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str | int | None = None, stream: IO[str] | None = None) -> logging.Handler:
    """Send the root logger's records to `stream` (stderr) as JSON lines; safe to call more than once.

    `level` defaults to the settings' log level (MEDIASEARCH_LOG_LEVEL), else INFO so the per-request
    lines are on.
    """
    level = level or get_settings().log_level or "INFO"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
