"""A primary/backup processor pair on one machine (loopback TCP): the standby takes over when
the active processor is SIGKILLed, clients keep their connections and rooms, a Words Battle
game goes on, every frame sent during the switch is answered, and the old primary comes
back as the standby. (Across hosts, with CURVE and cut links: tests/integration/test_multihost.py.)
"""

from __future__ import annotations

import asyncio
import time

from websockets.protocol import State

from tests.conftest import Client
from tests.integration.support import Pair, gateway_index, pair_fixture, serving  # noqa: F401 - the fixture `pair`
from tests.integration.test_words_battle import is_, start_long_game, to_room

OUTAGE = ("processor-unavailable", "processor-restarted", "watcher-unavailable",
          "watcher-restarted", "unknown-room")
DEADLINE = 30.0  # for anything to happen (2 shared cores, 6 interpreters); never a measure


async def test_the_standby_takes_over_from_a_sigkilled_processor(pair: Pair) -> None:
    primary = pair.processor("primary")
    backup = pair.processor("backup")
    pair.gateways()
    await pair.until(lambda: pair.healthz()[0] == 200, "the gateways healthy")
    assert "processor: primary tcp://127.0.0.1:" in pair.healthz()[1]
    assert serving(primary) and not serving(backup)

    clients: dict[int, Client] = {}
    while len(clients) < 2:  # one player on each gateway process
        c = await Client.connect(pair.url)
        if gateway_index(c) in clients:
            await c.close()
        else:
            clients[gateway_index(c)] = c
    a, b = clients.values()
    try:
        room = "failover1"
        await start_long_game(pair, a, b, room)  # type: ignore[arg-type]

        primary.kill()
        killed = time.monotonic()
        # chat until the game's echo comes back: every attempt gets an answer, never silence
        n = 0
        while True:
            assert time.monotonic() - killed < DEADLINE, f"no takeover\n{pair.logs()}"
            n += 1
            text = f"still here {n}"
            await a.send({**to_room("send-message", room, {"message": text}), "id": f"m{n}"})
            echoed = is_("send-message", room, a.id, message=text)
            mine = f"m{n}"  # errors for earlier frames (sent before the switch) wait in the inbox
            reply = await a.next(lambda m, echoed=echoed, mine=mine: echoed(m) or (
                m["action"] == "error" and m.get("id") == mine))
            if reply["action"] == "send-message":
                if "useravatar" in reply["message_body"]:
                    break  # the game's own echo: the games watcher runs the room again
                # relayed (the room not yet claimed again): the games watcher's hello is still on its way
                await asyncio.sleep(0.05)
                continue
            assert reply["message_body"]["code"] in OUTAGE , reply
            await asyncio.sleep(0.05)  # a client's pace, under the default rate limit
        took = time.monotonic() - killed
        assert reply["message_body"]["useravatar"] == "al"  # alice's, in the same game
        late = [m for m in a.inbox if m["action"] == "error"]  # frames sent before the switch
        assert all(m["message_body"]["code"] in OUTAGE for m in late), late
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
