"""What the webhooks send for each event, how they sign it, when they retry, when they start."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from meshstream_zmq.aio import Event, RoomMessage
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind
from services.watchers import bundled
from services.webhooks import Backoff, read_secret, sign, webhook_event


def test_events_become_pusher_style_webhook_events() -> None:
    def ev(kind: EventKind, room: str, client: str = "", user: str = "") -> Event:
        return Event(kind, client, room, 1, user)

    assert webhook_event(ev(EventKind.ROOM_CREATED, "r")) == {"name": "room_occupied", "room": "r"}
    assert webhook_event(ev(EventKind.ROOM_DELETED, "r")) == {"name": "room_vacated", "room": "r"}
    assert webhook_event(ev(EventKind.CLIENT_JOINED_ROOM, "r", "c", "alice")) == {
        "name": "member_added", "room": "r", "client": "c", "user": "alice"}
    assert webhook_event(ev(EventKind.CLIENT_LEFT_ROOM, "r", "c"))["name"] == "member_removed"  # type: ignore[index]
    # away/back once per client (the lobby's event), not once per room
    assert webhook_event(ev(EventKind.CLIENT_AWAY, "mesh-global", "c", "u")) == {
        "name": "client_away", "client": "c", "user": "u"}
    assert webhook_event(ev(EventKind.CLIENT_BACK, "r", "c")) is None
    # the lobby's joins are connections; connects themselves are not sent
    assert webhook_event(ev(EventKind.CLIENT_JOINED_ROOM, "mesh-global", "c")) is None
    assert webhook_event(ev(EventKind.CLIENT_CONNECTED, "", "c")) is None
    assert webhook_event(RoomMessage("r", "say", "c", {"n": 1})) == {
        "name": "room_message", "room": "r", "action": "say", "sender": "c", "data": {"n": 1}}


def test_the_signature_is_the_hex_hmac_sha256_of_the_body() -> None:
    body = b'{"time_ms":1,"events":[]}'
    assert sign(b"k" * 16, body) == "sha256=" + hmac.new(b"k" * 16, body, hashlib.sha256).hexdigest()


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff()
    assert [b.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert b.delay(20) == 30.0 and b.give_up_after == 300.0


def test_the_secret_file_must_hold_a_long_enough_secret(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("0123456789abcdef0123\n")
    assert read_secret(str(good)) == b"0123456789abcdef0123"
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(SystemExit, match="at least 16"):
        read_secret(str(short))
    with pytest.raises(SystemExit, match="webhook secret file"):
        read_secret(str(tmp_path / "missing"))


def test_run_starts_the_webhooks_only_when_configured() -> None:
    assert "webhooks" not in bundled(Config())
    assert "webhooks" in bundled(Config(webhook_url="https://x.example/h", webhook_secret_file="f"))
    problems = Config(webhook_url="https://x.example/h").problems()
    assert any("--webhook-secret-file" in p for p in problems)
    bad = Config(webhook_url="ftp://x", webhook_secret_file="f")
    assert any("--webhook-url" in p for p in bad.problems())
