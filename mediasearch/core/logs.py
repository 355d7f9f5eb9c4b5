"""Logs: one JSON object per line for a log shipper (CloudWatch, Loki, jq), readable lines for a person.

The API logs one line per request with `request_id`, `method`, `path`, `status` and `elapsed_ms`;
anything passed as `extra=` to a logging call becomes a field of its JSON line. Where the logs go to a
terminal, the same records are written as plain lines instead (`configure_logging` decides).
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
    # uvicorn's copy of its message with ANSI colour codes, for its own formatter: noise in a field.
    "color_message",
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


class TextFormatter(logging.Formatter):
    """A line a person reads: time, level, message, and the request id where there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id and record.name != "mediasearch.access":
            line += f" [request {request_id}]"
        return line


class StderrHandler(logging.StreamHandler):
    """A stream handler on whatever `sys.stderr` is when a record is written, not when it was made.

    A harness that swaps stderr and then closes it (click's CliRunner, pytest's capture) would
    otherwise leave a handler on a closed file, and every later record would print a "Logging error"
    traceback into somebody else's output.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass  # always the current sys.stderr


def configure_logging(
    level: str | int | None = None, stream: IO[str] | None = None, as_json: bool | None = None
) -> logging.Handler:
    """Send the root logger's records to `stream` (stderr); safe to call more than once.

    `level` defaults to the settings' log level (MEDIASEARCH_LOG_LEVEL), else INFO so the per-request
    lines are on. `as_json` defaults to JSON lines unless the stream is a terminal.
    """
    level = level or get_settings().log_level or "INFO"
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _MARK, False):
            root.removeHandler(old)
    out = stream or sys.stderr
    if as_json is None:
        as_json = not (hasattr(out, "isatty") and out.isatty())
    handler = StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
