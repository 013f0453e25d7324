"""A primary/backup processor pair on one machine (loopback TCP): the standby takes over when
the active processor is SIGKILLed, clients keep their connections and rooms, a Words Battle
game goes on, every frame sent during the switch is answered, and the old primary comes
back as the standby. (Across hosts, with CURVE and cut links: tests/integration/test_multihost.py.)
"""

from __future__ import annotations

import time

from websockets.protocol import State

from tests.integration.support import Pair, one_per_gateway, pair_fixture, serving  # noqa: F401 - the fixture `pair`
from tests.integration.test_words_battle import (
    chat_until_the_game_answers,
    is_,
    start_long_game,
    to_room,
)

DEADLINE = 30.0  # for anything to happen (2 shared cores, 6 interpreters); never a measure


async def test_the_standby_takes_over_from_a_sigkilled_processor(pair: Pair) -> None:
    primary = pair.processor("primary")
    backup = pair.processor("backup")
    pair.gateways()
    await pair.until(lambda: pair.healthz()[0] == 200, "the gateways healthy")
    assert "processor: primary tcp://127.0.0.1:" in pair.healthz()[1]
    assert serving(primary) and not serving(backup)

    a, b = await one_per_gateway(pair.url, 2)
    try:
        room = "failover1"
        await start_long_game(pair, a, b, room)  # type: ignore[arg-type]

        primary.kill()
        killed = time.monotonic()
        reply = await chat_until_the_game_answers(a, room, DEADLINE, pair.logs)
        took = time.monotonic() - killed
        assert reply["message_body"]["useravatar"] == "al"  # alice's, in the same game
        text = reply["message_body"]["message"]
        await b.next(is_("send-message", room, a.id, message=text))
        assert a.ws.state is State.OPEN and b.ws.state is State.OPEN
        assert serving(backup)
        status, body = pair.healthz()
        assert status == 200 and "processor: backup tcp://127.0.0.1:" in body, body
        print(f"failover: the game answered again {took:.2f} s after the SIGKILL")

        # the old primary comes back: it finds the backup active and becomes the standby
        again = pair.processor("primary", "primary-again")
        await pair.until(lambda: '"processor passive' in again.text(), "the primary passive")
        assert serving(backup) and "processor: backup" in pair.healthz()[1]
        await a.send(to_room("send-message", room, {"message": "after"}))
        await b.next(is_("send-message", room, a.id, message="after"))
    finally:
        for c in (a, b):
            await c.close()
