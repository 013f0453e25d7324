"""Log lines are bounded: whatever a client sends, no line copies more than a few hundred
characters of it (meshstream_zmq/observability.py)."""

from __future__ import annotations

import json
import logging

from meshstream_zmq.observability import LOG_ITEMS, LOG_TEXT, JsonFormatter, bounded


def test_bounded_cuts_long_text_and_says_how_much() -> None:
    assert bounded("short") == "short"
    assert bounded("x" * LOG_TEXT) == "x" * LOG_TEXT
    assert bounded("x" * 60_000) == "x" * LOG_TEXT + "…[+59800 chars]"
    assert bounded("abcdef", 3) == "abc…[+3 chars]"
    assert bounded(b"\xff" * 500, 4) == "\ufffd" * 4 + "…[+496 chars]"
    assert bounded(7) == 7 and bounded(None) is None and bounded(True) is True


def test_bounded_keeps_a_few_items_of_a_collection() -> None:
    many = ["y" * 1000] * 100
    out = bounded(many)
    assert len(out) == LOG_ITEMS + 1 and out[-1] == f"…[+{100 - LOG_ITEMS} items]"
    assert all(len(item) < LOG_TEXT + 20 for item in out)
    assert bounded({"k": "z" * 1000})["k"].startswith("z" * LOG_TEXT + "…")


def format_line(msg: str, fields: dict[str, object], exc: BaseException | None = None) -> str:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, msg, None,
                               (type(exc), exc, exc.__traceback__) if exc else None)
    record.fields = fields
    return JsonFormatter().format(record)


def test_every_log_line_is_bounded_whoever_logged_it() -> None:
    name = "n" * 60_000  # a room name as long as a frame allows
    try:
        raise ValueError(f"bad room {name}")
    except ValueError as exc:
        line = format_line(f"failed for {name}", {"room": name, "rooms": [name] * 50}, exc)
    entry = json.loads(line)
    assert len(line) < 8000  # from over 3 MB of client text
    assert entry["room"].endswith("…[+59800 chars]")
    assert "ValueError: bad room nnn" in entry["exc"]  # the traceback keeps its shape
    assert entry["msg"].startswith("failed for nnn")
