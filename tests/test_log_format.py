"""Logs: readable lines on a terminal, JSON lines otherwise, and never uvicorn's ANSI copy of a message."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from mediasearch.core.logs import configure_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_like_uvicorn() -> None:
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s", "http://127.0.0.1:8000", extra={"color_message": "\x1b[1mUvicorn\x1b[0m"}
    )
    logging.getLogger("mediasearch.access").info(
        "GET /health 200 1.0 ms", extra={"request_id": "abc", "status": 200}
    )


def test_json_lines_when_not_a_terminal(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", out)
    _log_like_uvicorn()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["message"] == "Uvicorn running on http://127.0.0.1:8000"
    assert "color_message" not in lines[0] and "\x1b" not in out.getvalue()
    assert lines[1]["request_id"] == "abc" and lines[1]["status"] == 200


def test_readable_lines_on_a_terminal(restore_root: None) -> None:
    out = Terminal()
    configure_logging("INFO", out)
    _log_like_uvicorn()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("INFO    Uvicorn running on http://127.0.0.1:8000")
    assert lines[1].endswith("GET /health 200 1.0 ms")
    assert not any(line.startswith("{") for line in lines) and "\x1b" not in out.getvalue()


def test_the_format_can_be_forced(restore_root: None) -> None:
    out = Terminal()
    configure_logging("INFO", out, as_json=True)
    logging.getLogger("x").info("hello")
    assert json.loads(out.getvalue())["message"] == "hello"


def test_a_handler_made_on_a_swapped_stderr_writes_to_the_current_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CliRunner swaps stderr and closes it after the command: a handler bound to that file would
    print a "Logging error" traceback into every later command's output."""
    from mediasearch.core.logs import StderrHandler

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler = StderrHandler()
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    log = logging.getLogger("mediasearch.test.stderr")
    log.addHandler(handler)
    try:
        log.warning("after the swap")
    finally:
        log.removeHandler(handler)
    assert "after the swap" in second.getvalue()
