"""distributed_core.logs: one dictConfig, text and JSON lines, rate-limited warnings."""

from __future__ import annotations

import io
import json
import logging

import pytest

from distributed_core import logs


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_format(restore_logging):
    out = io.StringIO()
    logs.setup("info", "text", stream=out)
    logging.getLogger("distributed_center").info("Registered worker %s", "tcp://h:1")
    logging.getLogger("distributed_center").debug("not shown")
    line = out.getvalue().strip()
    assert line.endswith(" INFO distributed_center: Registered worker tcp://h:1")
    assert "not shown" not in out.getvalue()


def test_json_format(restore_logging):
    out = io.StringIO()
    logs.setup("debug", "json", stream=out)
    log = logging.getLogger("distributed_worker.stream")
    log.debug("a %s", "b")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(x) for x in out.getvalue().splitlines())
    assert first["level"] == "DEBUG" and first["logger"] == "distributed_worker.stream"
    assert first["message"] == "a b" and first["time"].endswith("Z")
    assert "ValueError: boom" in second["exception"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="log level"):
        logs.setup("loud")
    with pytest.raises(ValueError, match="log format"):
        logs.setup("info", "xml")


def test_rate_limit_filter():
    now = [0.0]
    f = logs.RateLimitFilter(period=10, burst=2, clock=lambda: now[0])

    def record(msg="lost worker %s"):
        return logging.LogRecord("c", logging.WARNING, "", 0, msg, ("a",), None)

    assert [f.filter(record()) for _ in range(5)] == [True, True, False, False, False]
    assert f.filter(record("other %s"))  # another template is counted apart
    now[0] = 11.0
    r = record()
    assert f.filter(r)
    assert "(3 similar messages suppressed)" in r.getMessage()
