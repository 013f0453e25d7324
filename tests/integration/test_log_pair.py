"""A processor pair on one log (issue 17 item 3; one box, one nats-server): the standby
follows the log and takes over with the same epoch and state. Across a SIGKILL of the active
processor, and across a SIGSTOP past the failover timeout and a SIGCONT (the old one is
fenced: it emits nothing and follows the log), every frame a client sent is handled exactly
once, every member receives every message once, in order, and nobody sees an error."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.nats_server import nats_server
from tests.integration.support import DEADLINE, Pair, one_per_gateway, serving, uid
from tests.integration.test_log import chat_through


@pytest.fixture
def logged_pair(tmp_path: Path) -> Iterator[tuple[Pair, str]]:
    with nats_server(tmp_path / "js") as (url, _):
        made = Pair(tmp_path)
        try:
            yield made, url
        finally:
            made.stop()


async def started(pair: Pair, url: str) -> None:
    """Snapshots every 100 entries: the log is trimmed under the standby as it follows."""
    primary = pair.processor("primary", None, "--log", url, "--snapshot-every", "100")
    pair.processor("backup", None, "--log", url, "--snapshot-every", "100")
    pair.gateways("--no-watchers")
    await pair.until(lambda: pair.healthz()[0] == 200, "the gateways healthy")
    await pair.until(lambda: serving(primary), "the primary active")


async def test_the_standby_on_the_log_takes_over_a_sigkilled_processor_with_nothing_lost(
        logged_pair: tuple[Pair, str]) -> None:
    pair, url = logged_pair
    await started(pair, url)

    async def kill() -> None:
        pair.procs["primary"].kill()

    clients = await chat_through(pair.url, kill, pair.logs)
    assert serving(pair.procs["backup"])
    assert '"took the log over"' in pair.procs["backup"].text()
    for c in clients:
        await c.close()


async def test_a_paused_processor_is_fenced_by_the_takeover_and_emits_nothing(
        logged_pair: tuple[Pair, str]) -> None:
    pair, url = logged_pair
    await started(pair, url)
    primary, backup = pair.procs["primary"], pair.procs["backup"]

    async def pause() -> None:
        os.killpg(primary.proc.pid, signal.SIGSTOP)
        await pair.until(lambda: '"took the log over"' in backup.text(), "the standby took over")
        os.killpg(primary.proc.pid, signal.SIGCONT)

    clients = await chat_through(pair.url, pause, pair.logs)
    await pair.until(lambda: '"processor passive: following the log"' in primary.text(),
                     "the old primary follows")
    assert serving(backup) and not serving(primary)
    for c in clients:
        await c.close()


async def test_a_words_battle_game_goes_on_through_a_takeover_in_the_same_epoch(
        logged_pair: tuple[Pair, str]) -> None:
    """The game's watchers turn to the standby with the gateways; the room, its game and
    the players' state are the log's: nobody is told the processor restarted."""
    from tests.integration.test_words_battle import chat_until_the_game_answers, is_, start_long_game

    pair, url = logged_pair
    primary = pair.processor("primary", None, "--log", url)
    pair.processor("backup", None, "--log", url)
    pair.gateways()
    await pair.until(lambda: pair.healthz()[0] == 200, "the gateways healthy")
    await pair.until(lambda: serving(primary), "the primary active")
    a, b = await one_per_gateway(pair.url, 2)
    try:
        room = "logfail1"
        await start_long_game(pair, a, b, room)  # type: ignore[arg-type]
        primary.kill()
        reply = await chat_until_the_game_answers(a, room, DEADLINE * 2, pair.logs)
        assert reply["message_body"]["useravatar"] == "al"  # alice's, in the same game
        await b.next(is_("send-message", room, a.id, message=reply["message_body"]["message"]))
        told = [m["message_body"]["code"] for c in (a, b) for m in c.inbox if m["action"] == "error"]
        assert not {"processor-restarted", "processor-unavailable", "messages-lost",
                    "history-lost"} & set(told), told
        assert serving(pair.procs["backup"])
    finally:
        for c in (a, b):
            await c.close()


async def test_a_switchover_hands_over_under_chat_and_the_old_primary_restarts_as_standby(
        logged_pair: tuple[Pair, str], tmp_path: Path) -> None:
    """`meshstream switchover` (planned: an upgrade of the active host): the standby takes
    over at once, nothing lost or repeated, no error; the old primary, stopped and started
    again (the upgrade), comes back as the standby on the same log."""
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    pair, url = logged_pair
    await started(pair, url)
    primary, backup = pair.procs["primary"], pair.procs["backup"]
    took: list[float] = []

    async def switchover() -> None:
        asked = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "services.cli", "switchover", "--run-dir",
                             str(tmp_path / "primary-run")],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (done.stdout, done.stderr, pair.logs())
        took.append(time.monotonic() - asked)

    clients = await chat_through(pair.url, switchover, pair.logs)
    assert serving(backup) and not serving(primary)
    assert '"switchover: handing over to the standby"' in primary.text()
    handed = [json.loads(line)["ts"] for line in primary.text().splitlines()
              if '"switchover: handing over' in line]
    taken = [json.loads(line)["ts"] for line in backup.text().splitlines() if '"took the log over"' in line]
    print(f"switchover: the command returned after {took[0]:.2f} s; the standby took over "
          f"{(taken[-1] - handed[-1]) * 1000:.0f} ms after the hand-over")
    primary.kill(signal.SIGTERM)  # the upgrade: stopped, and started again
    again = pair.processor("primary", "primary-again", "--log", url, "--snapshot-every", "100")
    await pair.until(lambda: '"processor passive' in again.text(), "the old primary the standby")
    room_of = clients[0]
    await room_of.request({"action": "list-rooms", "id": uid("up")}, "room-list")
    for c in clients:
        await c.close()
