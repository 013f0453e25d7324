"""The pure parts of the Python client (meshstream_zmq.client): frame splitting, resume
bookkeeping, backoff, which closes come back, and when a token is refreshed."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from meshstream_zmq.client import (
    RequestError,
    Session,
    backoff,
    refresh_delay,
    should_reconnect,
    split_frames,
    token_expiry,
)


def test_joined_frames_are_split_on_crlf_and_lf_and_blank_lines_skipped() -> None:
    text = '{"action":"a","seq":1}\n{"action":"b"}\r\n\n{"action":"c"}\n'
    assert [f["action"] for f in split_frames(text)] == ["a", "b", "c"]


def test_a_line_that_is_not_a_json_object_is_refused() -> None:
    with pytest.raises(ValueError):
        split_frames('{"action":"a"}\n[1,2]')
    with pytest.raises(ValueError):
        split_frames("not json")


def test_a_frame_whose_seq_is_not_above_the_last_is_a_duplicate() -> None:
    s = Session()
    assert s.accept({"action": "chat", "seq": 5})
    assert not s.accept({"action": "chat", "seq": 5})
    assert not s.accept({"action": "chat", "seq": 3})
    assert s.accept({"action": "chat", "seq": 9})
    assert s.accept({"action": "room-list", "id": 1})  # replies carry no seq: always kept
    assert s.accept({"action": "x", "seq": True})  # not a number: not a position
    assert s.last_seq == 9


def test_another_processor_numbers_from_its_own_start() -> None:
    """After a processor restart or a failover (the connection stays open) `seq` starts
    over: a frame whose epoch names another processor is new, and so are the next ones."""
    s = Session(secret="s", epoch="P1", last_seq=4000)
    assert not s.accept({"action": "chat", "epoch": "P1.3", "seq": 12})  # ours: a repeat
    assert s.accept({"action": "chat", "epoch": "P2.1", "seq": 12})  # a room message of P2
    assert (s.epoch, s.last_seq) == ("P2", 12)
    assert s.accept({"action": "whisper", "epoch": "P2", "seq": 13})  # a direct one
    assert not s.accept({"action": "whisper", "epoch": "P2", "seq": 13})
    assert parse_qs(urlsplit(s.url("ws://h/wsmesh")).query)["seq"] == ["P2:13"]


def hello(resumed: bool | None = None, **body: object) -> dict[str, object]:
    b: dict[str, object] = {"client": "gw1-a.1", "session": "secret-2", "epoch": "e2", **body}
    if resumed is not None:
        b["resumed"] = resumed
    return {"action": "client-connected", "target": "gw1-a.1", "message_body": b}


def test_a_resume_keeps_the_last_seq_and_a_refused_one_starts_over() -> None:
    s = Session(secret="secret-1", epoch="e1", last_seq=40)
    assert s.connected(hello(resumed=True)) == "resumed"
    assert (s.secret, s.epoch, s.last_seq, s.client) == ("secret-2", "e2", 40, "gw1-a.1")
    assert s.connected(hello(resumed=False, reason="expired")) == "refused"
    assert s.last_seq == 0
    assert Session().connected(hello()) == "fresh"


def test_the_resume_url_carries_the_secret_and_position_and_keeps_other_parameters() -> None:
    s = Session(secret="a b/c", epoch="9f3c", last_seq=17)
    url = s.url("ws://h:1/wsmesh?token=T&resume=old")
    query = parse_qs(urlsplit(url).query)
    assert query == {"token": ["T"], "resume": ["a b/c"], "seq": ["9f3c:17"]}
    assert Session().url("ws://h:1/wsmesh") == "ws://h:1/wsmesh"  # no session: a fresh connect


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    assert [backoff(n, rand=lambda: 0.5) for n in range(6)] == [0.5, 1, 2, 4, 8, 10]
    assert backoff(0, rand=lambda: 0.0) == 0.25 and backoff(0, rand=lambda: 0.999) < 0.75
    assert backoff(1000, rand=lambda: 0.5) == 10  # no overflow


@pytest.mark.parametrize(("code", "again"), [
    (1006, True), (1001, True), (1011, True), (1012, True), (1013, True),
    (1000, False), (1008, False), (1009, False), (4000, False), (4001, False),
    (4002, False), (4003, False),
])
def test_only_closes_that_keep_the_session_or_say_later_come_back(code: int, again: bool) -> None:
    assert should_reconnect(code) is again


def jwt(claims: dict[str, object]) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{part}.sig"


def test_the_expiry_is_read_from_the_token_and_refreshed_ahead_of_it() -> None:
    assert token_expiry(jwt({"sub": "ann", "exp": 1000})) == 1000
    assert token_expiry(jwt({"sub": "ann"})) is None
    assert token_expiry("garbage") is None and token_expiry("a.!!!.b") is None
    assert refresh_delay(1000, now=0) == 940  # at most a minute ahead
    assert refresh_delay(100, now=0) == 80  # a fifth of its life ahead
    assert refresh_delay(3, now=0) == 2  # at least a second ahead
    assert refresh_delay(10, now=20) == 0  # late: at once


def test_an_error_reply_becomes_a_typed_error() -> None:
    e = RequestError({"action": "error", "id": 3,
                      "message_body": {"code": "not-member", "message": "you are not a member"}})
    assert (e.code, e.message, e.frame["id"]) == ("not-member", "you are not a member", 3)
