"""The pure parts of the Python client (meshstream_zmq.client): frame splitting, resume
bookkeeping, backoff, which closes come back, and when a token is refreshed."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from meshstream_zmq.client import (
    MAX_POSITIONS,
    POSITIONS_BYTES,
    RequestError,
    Session,
    backoff,
    refresh_delay,
    should_reconnect,
    split_frames,
    token_expiry,
)


def test_joined_frames_are_split_on_crlf_and_lf_and_blank_lines_skipped() -> None:
    text = '{"action":"a","offset":1}\n{"action":"b"}\r\n\n{"action":"c"}\n'
    assert [f["action"] for f in split_frames(text)] == ["a", "b", "c"]


def test_a_line_that_is_not_a_json_object_is_refused() -> None:
    with pytest.raises(ValueError):
        split_frames('{"action":"a"}\n[1,2]')
    with pytest.raises(ValueError):
        split_frames("not json")


def room(offset: object, target: str = "r", epoch: str = "P1.2", **more: object) -> dict[str, object]:
    return {"action": "chat", "target": target, "offset": offset, "epoch": epoch, **more}


def direct(offset: int, epoch: str = "P1", target: str = "gw1-a.1") -> dict[str, object]:
    return {"action": "whisper", "target": target, "IsTargetClient": True, "offset": offset,
            "epoch": epoch}


def test_a_frame_whose_offset_is_not_above_the_last_of_its_epoch_is_a_duplicate() -> None:
    s = Session(epoch="P1", positions={"P1": 0})
    assert s.accept(room(5))
    assert not s.accept(room(5))
    assert not s.accept(room(3))
    assert s.accept(room(9))
    assert s.accept(room(1, target="q", epoch="P1.3"))  # each room numbers its own
    assert s.accept({"action": "room-list", "id": 1})  # replies carry no position: always kept
    assert s.accept(room(True))  # not a number: not a position
    assert s.accept(direct(1)) and not s.accept(direct(1)) and s.accept(direct(2))
    assert not s.accept(direct(2, target="r"))  # a watcher's to a room target: its epoch says
    assert s.positions == {"P1.2": 9, "P1.3": 1, "P1": 2}


def test_a_new_epoch_is_a_stream_of_its_own() -> None:
    """A room made again, a processor restart or a failover (the connection stays open):
    a frame of another epoch is new, and so are the next ones of that epoch."""
    s = Session(secret="s", epoch="P1", positions={"P1": 40, "P1.3": 4000})
    assert not s.accept(room(12, epoch="P1.3"))  # ours: a repeat
    assert s.accept(room(12, epoch="P1.9"))  # the room made again
    query = parse_qs(urlsplit(s.url("ws://h/wsmesh")).query)
    assert query["positions"] == ["P1:40,P1.9:12,P1.3:4000"]  # direct first
    assert s.accept(room(12, epoch="P2.1"))  # another processor: the old one's are gone
    assert s.accept(direct(13, epoch="P2")) and not s.accept(direct(13, epoch="P2"))
    assert (s.epoch, s.positions) == ("P2", {"P2.1": 12, "P2": 13})


def test_leaving_a_room_forgets_its_position_and_the_oldest_go_past_the_bound() -> None:
    s = Session(epoch="P1", positions={}, client="gw1-a.1")
    s.accept(room(3))
    assert s.accept(room(4, action="client-left-room", sender="gw1-a.1"))
    assert s.positions == {}
    s.accept(room(4, action="client-left-room", sender="gw2-b.1"))  # somebody else left
    assert s.positions == {"P1.2": 4}
    for i in range(MAX_POSITIONS + 1):
        s.accept(room(1, epoch=f"P1.{i + 10}"))
    assert len(s.positions) == MAX_POSITIONS and "P1.2" not in s.positions


def hello(resumed: bool | None = None, **body: object) -> dict[str, object]:
    b: dict[str, object] = {"client": "gw1-a.1", "session": "secret-2", "epoch": "e2", **body}
    if resumed is not None:
        b["resumed"] = resumed
    return {"action": "client-connected", "target": "gw1-a.1", "message_body": b}


def test_a_resume_keeps_the_positions_and_a_refused_one_starts_over() -> None:
    s = Session(secret="secret-1", epoch="e1", positions={"e1": 40, "e1.1": 7})
    assert s.connected(hello(resumed=True)) == "resumed"
    assert (s.secret, s.epoch, s.positions, s.client) == (
        "secret-2", "e1", {"e1": 40, "e1.1": 7}, "gw1-a.1")
    assert s.connected(hello(resumed=False, reason="expired")) == "refused"
    assert (s.epoch, s.positions) == ("e2", {"e2": 0})  # no direct message yet
    assert Session().connected(hello()) == "fresh"


def test_the_resume_url_carries_the_secret_and_positions_and_keeps_other_parameters() -> None:
    s = Session(secret="a b/c", epoch="9f3c", positions={"9f3c.1": 4, "9f3c": 17, "9f3c.2": 8})
    url = s.url("ws://h:1/wsmesh?token=T&resume=old&seq=9f3c:3")
    query = parse_qs(urlsplit(url).query)
    assert query == {"token": ["T"], "resume": ["a b/c"],
                     "positions": ["9f3c:17,9f3c.2:8,9f3c.1:4"]}  # direct, then the most recent
    assert Session().url("ws://h:1/wsmesh") == "ws://h:1/wsmesh"  # no session: a fresh connect


def test_positions_past_the_url_budget_are_left_out_the_recent_kept() -> None:
    s = Session(secret="s", epoch="e", positions={f"e.{i}": 1 for i in range(2000)})  # direct left out
    url = s.url("ws://h/wsmesh")
    named = parse_qs(urlsplit(url).query)["positions"][0].split(",")
    assert len(url) < 8192 and named[0] == "e.1999:1" and len(",".join(named)) <= POSITIONS_BYTES


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
