"""Words Battle end to end: a scripted client speaking exactly the frames of docs/words-battle.md.

Real `meshstream run` clusters with the two Words Battle watchers (lobby + games) and
a fast clock (`--time-scale 0.05`: a 10 s turn lasts 0.5 s, the default 60 s game 3 s).
Every step waits on messages; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from services.words_battle.dictionary import english_words
from tests.conftest import Client, Cluster
from tests.integration.support import kill, roles

LOBBY = "mesh-global"
BOT = "bot-of-the-room"
FAST = ["--time-scale", "0.05"]
COLOURS = ("yellow", "red", "orange", "blue", "purple", "pink", "white")
READY = 30.0  # deadline for the watchers to come up (or back)
GAMES = "watcher words-battle-games"
LOBBY_WATCHER = "watcher words-battle-lobby"

Msg = dict[str, Any]
Pred = Callable[[Msg], bool]


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def wb(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(watchers=True, args=FAST)


@pytest.fixture
async def player(wb: Cluster) -> AsyncIterator[Callable[[], Any]]:
    """`await player()`: a connected Client, closed after the test."""
    opened: list[Client] = []

    async def make() -> Client:
        c = await Client.connect(wb.url)
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.close()


# ------------------------------------------------------------------ frames (docs/words-battle.md)


def join_friend(room: str, name: str, limit: int = 3) -> Msg:
    return {"action": "join-room", "target": LOBBY,
            "message_body": {"roomname": room, "playerlimit": limit, "setplayername": name}}


def join_random(room: str) -> Msg:
    return {"action": "join-random-room", "target": LOBBY, "message_body": {"roomname": room}}


def to_room(action: str, room: str, body: Msg | None = None) -> Msg:
    msg: Msg = {"action": action, "target": room}
    if body is not None:
        msg["message_body"] = body
    return msg


# ------------------------------------------------------------------ helpers


def is_(action: str, room: str | None = None, by: str | None = None, **body: Any) -> Pred:
    """A predicate: this action (in `room`, sent by `by`), with these message_body values."""
    def pred(m: Msg) -> bool:
        mb = m.get("message_body") or {}
        return (m.get("action") == action and (room is None or m.get("target") == room)
                and (by is None or m.get("sender") == by)
                and all(mb.get(k) == v for k, v in body.items()))
    return pred


def turn_msg(room: str) -> Pred:
    return lambda m: is_("message-by-bot", room, BOT)(m) and "whichclientturn" in m["message_body"]


def chat_phase_msg(room: str) -> Pred:
    return lambda m: is_("message-by-bot", room, BOT)(m) and "whichclientturn" not in m["message_body"]


def bot_line(room: str, startswith: str) -> Pred:
    return lambda m: (is_("send-message", room, BOT)(m)
                      and str(m["message_body"].get("message", "")).startswith(startswith))


async def in_order(c: Client, *preds: Pred, timeout: float = 10) -> list[Msg]:
    """The next messages matching `preds`, which must arrive in this order.

    Messages matching none of them stay queued (in order) for later expects.
    """
    got: list[Msg] = []
    aside: list[Msg] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < len(preds):
            msg = await c.next(lambda m: True, max(0.01, deadline - time.monotonic()))
            if preds[len(got)](msg):
                got.append(msg)
                continue
            later = [i for i in range(len(got) + 1, len(preds)) if preds[i](msg)]
            assert not later, f"{msg} arrived before step {len(got)} ({len(got)} matched: {got})"
            aside.append(msg)
    finally:
        c.inbox[:0] = aside
    return got


async def each(clients: list[Client], pred: Pred, timeout: float = 10) -> list[Msg]:
    """The first message matching `pred` at every one of `clients`."""
    return list(await asyncio.gather(*(c.next(pred, timeout) for c in clients)))


async def wait_for_watchers(url: str) -> None:
    """Poll with a deadline until the lobby answers and the games watcher takes a join.

    Until the lobby watcher's hello lands, a lobby join is done the built-in way
    (client-joined-room) and a claimed-but-dead watcher answers watcher-unavailable;
    the games watcher missing shows as fail-join-room-notify. Fresh room names each try.
    """
    probe = await Client.connect(url)
    deadline = time.monotonic() + READY
    try:
        for n in itertools.count(1):
            room = f"probe{n}"
            await probe.send(join_friend(room, "probe"))
            msg = await probe.next(lambda m: m["action"] in (
                "know-yourself", "client-joined-room", "fail-join-room-notify", "error"),
                timeout=max(0.1, deadline - time.monotonic()))
            if msg["action"] == "know-yourself":
                return  # closing the probe empties its room: the games watcher deletes it
            if msg["action"] == "client-joined-room":
                await probe.send({"action": "leave-room", "target": room})
            assert time.monotonic() < deadline, f"Words Battle watchers not ready; last reply {msg}"
            await asyncio.sleep(0.1)  # polling interval, not synchronisation
    finally:
        await probe.close()


async def enter_friend_room(c: Client, room: str, name: str, others: list[Client],
                            maker: bool = False) -> None:
    """Join a friend room as the client does: join-room, then answer know-yourself."""
    await c.send(join_friend(room, name))
    expected = [is_("join-room-notify", room, c.id, newmessage=f"{c.id} joined the room"),
                is_("know-yourself", c.id, BOT, sender=c.id)]
    if maker:
        expected.append(is_("is-room-maker", room, BOT, message=c.id))
    got = await in_order(c, *expected)
    assert got[1]["IsTargetClient"] is True
    for o in others:
        await o.next(is_("join-room-notify", room, c.id))
    await c.send(to_room("set-client-name", room, {"setname": name}))


async def roster(clients: list[Client], room: str, size: int) -> list[Msg]:
    """The client-list-notify of `size` players at each of `clients`; all the same, sorted by slug."""
    lists = [m["message_body"]["clientsinroomessage"] for m in await each(
        clients, lambda m: is_("client-list-notify", room, BOT)(m)
        and len(m["message_body"]["clientsinroomessage"]) == size)]
    assert all(lst == lists[0] for lst in lists)
    slugs = [p["slug"] for p in lists[0]]
    assert slugs == sorted(slugs)
    for p in lists[0]:
        assert set(p) == {"color", "name", "score", "slug"} and p["color"] in COLOURS
    return lists[0]


async def open_random_room(c: Client, room: str, name: str) -> str:
    """`c` asks for a random room while none is pending: it opens `room` and names itself."""
    await c.send(join_random(room))
    found, _, _ = await in_order(c, is_("found-random-room-notify"), is_("join-room-notify"),
                                 is_("know-yourself", c.id, sender=c.id))
    assert found["message_body"] == {"roomname": room} and found["target"] == room
    await c.send(to_room("set-client-name", room, {"setname": name}))
    await roster([c], room, 1)
    return room


async def join_pending_random_room(c: Client, asked: str, room: str, waiting: Client) -> None:
    """`c` asks for a random room (naming `asked`) and is sent to the pending `room`."""
    await c.send(join_random(asked))
    found, _, _ = await in_order(c, is_("found-random-room-notify"), is_("join-room-notify", room, c.id),
                                 is_("know-yourself", c.id, sender=c.id))
    assert found["message_body"] == {"roomname": room}
    await waiting.next(is_("join-room-notify", room, c.id))


async def first_word(a: Client, b: Client, room: str, listed: list[Msg]) -> tuple[Client, Client]:
    """A two-player game's first turn: the first by slug plays "water" (scores 1), and the
    turn passes on with "r". Returns (first, second)."""
    names = {p["slug"]: p["name"] for p in listed}
    colour = {p["slug"]: p["color"] for p in listed}
    first, second = sorted((a, b), key=lambda c: c.id)
    turn = await each([a, b], turn_msg(room))
    check_turn(turn[0], first, "w", {a.id: 0, b.id: 0}, names)
    nxt = await attempt([a, b], first, room, "water", names[first.id], colour[first.id])
    check_turn(nxt, second, "r", {first.id: 1, second.id: 0}, names)
    return first, second


def scores(stats: list[Msg]) -> dict[str, int]:
    return {p["slug"]: p["score"] for p in stats}


async def attempt(clients: list[Client], who: Client, room: str, word: str, name: str,
                  colour: str) -> Msg:
    """`who` plays `word` on its turn: echoed as chat, the bot ends the turn and announces the next.

    Returns the next turn's message-by-bot (as every player saw it).
    """
    await who.send(to_room("attempt-word", room, {"message": word}))
    echo_or_late = await who.next(lambda m: is_("send-message", room, who.id)(m)
                                  or is_("error", code="not-your-turn")(m))
    assert echo_or_late["action"] == "send-message", f"{name}'s turn ran out before {word!r} arrived"
    who.inbox.insert(0, echo_or_late)
    nexts = []
    for c in clients:
        echo, _, nxt = await in_order(c, is_("send-message", room, who.id, message=word),
                                      bot_line(room, f"<b>{name}</b>'s turn ended"), turn_msg(room))
        assert echo["message_body"] == {"message": word, "useravatar": name[:2], "color": colour}
        nexts.append(nxt)
    assert all(n["message_body"] == nexts[0]["message_body"] for n in nexts)
    return nexts[0]


def check_turn(msg: Msg, turn: Client, letter: str, stats: dict[str, int], names: dict[str, str]) -> None:
    body = msg["message_body"]
    assert body["letter"] == letter
    assert body["whichclientturn"]["slug"] == turn.id
    assert body["whichclientturn"]["name"] == names[turn.id]
    assert isinstance(body["timer"], int) and 0 < body["timer"] <= 11
    assert [p["slug"] for p in body["clientstats"]] == sorted(stats)
    assert scores(body["clientstats"]) == stats


def check_ranking(end: Msg) -> list[Msg]:
    ranking = end["message_body"]["client_list"]
    assert [p["score"] for p in ranking] == sorted((p["score"] for p in ranking), reverse=True)
    return ranking


# ------------------------------------------------------------------ 1. a full friend game


async def test_friend_game_start_to_end(wb: Cluster, player) -> None:
    words = english_words()
    assert {"water", "river", "apple"} <= words and "wxqzz" not in words
    a, b, d, late = [await player() for _ in range(4)]
    await wait_for_watchers(wb.url)
    room = "friends1"
    names = {a.id: "alice", b.id: "bobby", d.id: "dave"}

    # the maker creates the room; two friends join; each answers know-yourself with its name
    await enter_friend_room(a, room, "alice", [], maker=True)
    assert [p["name"] for p in await roster([a], room, 1)] == ["alice"]
    await enter_friend_room(b, room, "bobby", [a])
    await roster([a, b], room, 2)
    await enter_friend_room(d, room, "dave", [a, b])
    listed = await roster([a, b, d], room, 3)
    assert {p["slug"]: p["name"] for p in listed} == names
    assert {p["slug"]: p["color"] for p in listed} == {a.id: "yellow", b.id: "red", d.id: "orange"}
    assert all(p["score"] == 0 for p in listed)

    # a non-maker may neither start nor change settings: an error to it alone
    await b.send(to_room("start-the-game", room, {"message": room}))
    await b.error("not-room-maker")
    await b.send(to_room("room-settings", room, {"game_duration": "20", "player_limit": "2"}))
    await b.error("not-room-maker")
    await a.send(to_room("send-message", room, {"message": "hello all"}))
    for c in (a, b, d):  # a round trip through the games watcher: anything sent before it is here
        echo = await c.next(is_("send-message", room, a.id, message="hello all"))
        assert echo["message_body"] == {"message": "hello all", "useravatar": "al", "color": "yellow"}
    for c in (a, b, d):
        assert not [m for m in c.inbox if m["action"] in (
            "room-bot-greetings", "message-by-bot", "error", "room-setting-applied")], c.inbox
        if c is not a:
            assert not [m for m in c.inbox if m["action"] == "is-room-maker"]

    # the maker changes the settings (string values, as the client sends them)
    await a.send(to_room("room-settings", room, {"game_duration": "600", "player_limit": "4"}))
    for applied in await each([a, b, d], is_("room-setting-applied", room, BOT)):
        assert "4 players" in applied["message_body"]["message"]
        assert "600 seconds" in applied["message_body"]["message"]

    # the maker starts: greetings, the bot's hello, then the chat phase
    await a.send(to_room("start-the-game", room, {"message": room}))
    for c in (a, b, d):
        greet, hello, chat = await in_order(c, is_("room-bot-greetings", room, BOT),
                                            is_("send-message", room, BOT), chat_phase_msg(room))
        assert greet["message_body"] == {"message": "welcome"}
        assert hello["message_body"]["message"]
        body = chat["message_body"]
        assert body["letter"] == "" and isinstance(body["timer"], int) and 0 < body["timer"] <= 10
        assert body["clientstats"] == listed

    # a latecomer is refused once the game started, and is no player there
    await late.send(join_friend(room, "carol"))
    refused = await late.expect("fail-join-room-notify")
    assert "started" in refused["message_body"]["message"]
    await late.send(to_room("send-message", room, {"message": "let me in"}))
    await late.error("not-a-player")
    assert not [m for m in late.inbox if m["action"] in ("know-yourself", "client-list-notify")]

    # turns go by slug order, starting with "w"
    p1, p2, p3 = sorted((a, b, d), key=lambda c: c.id)
    players = [a, b, d]
    colour = {p["slug"]: p["color"] for p in listed}
    score = {c.id: 0 for c in players}

    def play(who: Client, word: str) -> Any:
        return attempt(players, who, room, word, names[who.id], colour[who.id])

    first = await each(players, turn_msg(room))
    check_turn(first[0], p1, "w", score, names)
    assert all(m["message_body"] == first[0]["message_body"] for m in first)

    # off turn: refused, scores nothing, and the turn stays p1's
    await p2.send(to_room("attempt-word", room, {"message": "water"}))
    await p2.error("not-your-turn")

    nxt = await play(p1, "apple")  # wrong letter: the letter stays
    assert "does not start with" in nxt["message_body"]["message"]
    check_turn(nxt, p2, "w", score, names)

    nxt = await play(p2, "wxqzz")  # not a word
    assert "not in the dictionary" in nxt["message_body"]["message"]
    check_turn(nxt, p3, "w", score, names)

    nxt = await play(p3, "water")  # scores; its last letter is next
    score[p3.id] += 1
    assert "scores with" in nxt["message_body"]["message"]
    check_turn(nxt, p1, "r", score, names)

    nxt = await play(p1, "river")
    score[p1.id] += 1
    check_turn(nxt, p2, "r", score, names)

    nxt = await play(p2, "river")  # already used: nothing scored, the letter stays
    assert "already used" in nxt["message_body"]["message"]
    check_turn(nxt, p3, "r", score, names)

    # p1 leaves mid-game: dropped, the others get the new list (scores kept)
    await p1.send(to_room("leave-room", room, {"message": room}))
    left = await roster([p2, p3], room, 2)
    assert scores(left) == {p2.id: score[p2.id], p3.id: score[p3.id]}

    # p2 leaves too: p3 alone, the game ends
    await p2.send(to_room("leave-room", room, {"message": room}))
    _, ended, end = await in_order(
        p3, lambda m: is_("client-list-notify", room, BOT)(m)
        and len(m["message_body"]["clientsinroomessage"]) == 1,
        bot_line(room, "Game ended"), is_("room-bot-end-game", room, BOT))
    assert "left" in ended["message_body"]["message"]
    ranking = check_ranking(end)
    assert [(p["slug"], p["score"]) for p in ranking] == [(p3.id, 1)]
    assert end["message_body"]["word_list"] == ["water", "river"]
    assert end["message_body"]["message"]


# ------------------------------------------------------------------ 2. random matchmaking


async def test_random_match_starts_by_itself(wb: Cluster, player) -> None:
    x, y = await player(), await player()
    await wait_for_watchers(wb.url)

    room = await open_random_room(x, "RandomXx01", "xavier")
    await join_pending_random_room(y, "RandomYy02", room, x)  # its own name, but x's room is pending
    await y.send(to_room("set-client-name", room, {"setname": "yvonne"}))
    listed = await roster([x, y], room, 2)
    assert sorted(p["name"] for p in listed) == ["xavier", "yvonne"]

    # no start-the-game: it starts once both have names
    for c in (x, y):
        await in_order(c, is_("room-bot-greetings", room, BOT, message="welcome"),
                       is_("send-message", room, BOT), chat_phase_msg(room))
        assert not [m for m in c.inbox if m["action"] == "is-room-maker"]
    first, second = await first_word(x, y, room, listed)

    # the default 60 s game (3 s here) runs out by itself
    for c in (x, y):
        _, end = await in_order(c, bot_line(room, "Game ended"), is_("room-bot-end-game", room, BOT))
        ranking = check_ranking(end)
        assert [(p["slug"], p["score"]) for p in ranking] == [(first.id, 1), (second.id, 0)]
        assert end["message_body"]["word_list"] == ["water"]


async def test_a_random_room_that_lost_its_second_player_is_offered_again(wb: Cluster, player) -> None:
    x, y, z = await player(), await player(), await player()
    await wait_for_watchers(wb.url)
    room = await open_random_room(x, "RandomXx03", "xavier")
    await join_pending_random_room(y, "RandomYy03", room, x)  # fills x's room ...
    await y.send(to_room("leave-room", room))  # ... and leaves before naming itself
    for _ in range(100):  # until the room has let y go (the games watcher carries it out)
        members = await x.request({"action": "list-members", "target": room}, "member-list")
        if members["message_body"]["members"] == [x.id]:
            break
    else:
        raise AssertionError(f"{y.id} still in {room}")

    # The next random player is matched with x, who would otherwise wait alone.
    await join_pending_random_room(z, "RandomZz03", room, x)
    await z.send(to_room("set-client-name", room, {"setname": "zoe"}))
    listed = await roster([x, z], room, 2)
    assert sorted(p["name"] for p in listed) == ["xavier", "zoe"]
    for c in (x, z):  # and their game starts by itself
        await in_order(c, is_("room-bot-greetings", room, BOT, message="welcome"))


# ------------------------------------------------------------------ 3. the games watcher SIGKILLed


async def start_long_game(wb: Cluster, a: Client, b: Client, room: str) -> None:
    """alice (maker) and bobby in a friend room whose game has started and lasts long."""
    await wait_for_watchers(wb.url)
    await enter_friend_room(a, room, "alice", [], maker=True)
    await enter_friend_room(b, room, "bobby", [a])
    await roster([a, b], room, 2)
    await a.send(to_room("room-settings", room, {"game_duration": "600"}))
    await each([a, b], is_("room-setting-applied", room))
    await a.send(to_room("start-the-game", room, {"message": room}))
    await each([a, b], chat_phase_msg(room))


OUTAGE = ("processor-unavailable", "processor-restarted", "watcher-unavailable",
          "watcher-restarted", "unknown-room")  # what a frame sent during a processor outage may get


async def chat_until_the_game_answers(a: Client, room: str, timeout: float = 30,
                                      logs: Callable[[], str] = str) -> Msg:
    """After the processor was killed or cut off: chat in `room` at a client's pace until
    the game's own echo comes back (its avatar: the games watcher runs the room again),
    and return it. Every attempt must be answered, never silence: with an outage error
    carrying its id, or relayed as a plain room message while the games watcher's hello is
    on its way. Errors for frames sent before the outage may arrive too: outage codes only."""
    deadline = time.monotonic() + timeout
    for n in itertools.count(1):
        assert time.monotonic() < deadline, f"the game never answered again\n{logs()}"
        text, mine = f"still here {n}", f"m{n}"
        await a.send({**to_room("send-message", room, {"message": text}), "id": mine})
        echoed = is_("send-message", room, a.id, message=text)
        reply = await a.next(lambda m, echoed=echoed, mine=mine: echoed(m) or (
            m["action"] == "error" and m.get("id") == mine))
        if reply["action"] == "send-message" and "useravatar" in reply["message_body"]:
            late = [m for m in a.inbox if m["action"] == "error"]
            assert all(m["message_body"]["code"] in OUTAGE for m in late), late
            return reply
        if reply["action"] == "error":
            assert reply["message_body"]["code"] in OUTAGE, reply
        await asyncio.sleep(0.05)  # a client's pace, under the default rate limit
    raise AssertionError("unreachable")


async def test_the_lobby_watcher_answers_plain_lobby_frames_as_the_unclaimed_lobby(
        wb: Cluster, player) -> None:
    """With the lobby claimed by the Words Battle lobby watcher, gomeshstream's plain lobby
    frames get the answers docs/protocol.md gives for the unclaimed lobby, with their ids;
    a 60 KB room name gets bad-room-name, and no log line copies it."""
    await wait_for_watchers(wb.url)
    c = await player()
    long_name = "n" * 60_000
    cases = [
        ({"action": "join-room", "target": LOBBY, "message_body": {"roomname": long_name}},
         "bad-room-name"),
        ({"action": "join-room", "target": LOBBY}, "already-member"),
        ({"action": "join-room", "target": LOBBY, "message_body": {"roomname": LOBBY}},
         "already-member"),
        ({"action": "leave-room", "target": LOBBY}, "cannot-leave-lobby"),
        ({"action": "send-message", "target": LOBBY, "message_body": {"text": "hi"}},
         "lobby-readonly"),
    ]
    for n, (frame, code) in enumerate(cases):
        await c.send({**frame, "id": n})
        err = await c.next(lambda m, n=n: m.get("id") == n)
        assert (err["action"], err["target"], err["message_body"]["code"]) == ("error", LOBBY, code)
        assert err["message_body"]["action"] == frame["action"] and err["sender"] == "meshstream"
    # a plain join of a good name still joins the built-in way, its id in the answer
    await c.send({"action": "join-room", "target": LOBBY, "message_body": {"roomname": "plain3"},
                  "id": "first"})
    joined = await c.next(is_("client-joined-room", "plain3", c.id))
    assert joined["id"] == "first" and joined["message_body"] == {"client": c.id, "room": "plain3"}
    await c.send({"action": "join-room", "target": LOBBY, "message_body": {"roomname": "plain3"},
                  "id": "again"})
    err = await c.next(lambda m: m.get("id") == "again")
    assert err["message_body"]["code"] == "already-member"
    wb.log.flush()
    log = Path(wb.log.name).read_text(errors="replace")  # every process's log lines
    assert "n" * 1000 not in log, "a log line copied the long room name"
    assert max(len(line) for line in log.splitlines()) < 5000


async def test_games_watcher_sigkill(wb: Cluster, player) -> None:
    a, b, bystander = await player(), await player(), await player()
    room = "doomed1"
    await start_long_game(wb, a, b, room)

    lobby_pid = roles(wb, LOBBY_WATCHER)[LOBBY_WATCHER]
    # The supervisor is held while the watcher is dead, so the outage lasts as long as the
    # checks below need (a restarted watcher takes its rooms back within a second and
    # ends the game it lost).
    os.kill(wb.proc.pid, signal.SIGSTOP)
    try:
        old = kill(wb, GAMES)
        # frames to the game room get an error, never silence. The processor notices the
        # SIGKILL at once; a frame it routed in the moment before is answered watcher-restarted.
        await a.send({**to_room("send-message", room, {"message": "anyone there?"}), "id": "k1"})
        err = await a.next(lambda m: is_("error")(m) and m.get("id") == "k1", timeout=5)
        assert err["message_body"]["code"] in ("watcher-unavailable", "watcher-restarted"), err
        await a.send({**to_room("send-message", room, {"message": "anyone?"}), "id": "k2"})
        err = await a.next(lambda m: is_("error")(m) and m.get("id") == "k2", timeout=5)
        assert err["message_body"]["code"] == "watcher-unavailable", err
        assert err["message_body"]["action"] == "send-message"
    finally:
        os.kill(wb.proc.pid, signal.SIGCONT)

    # clients stay connected: a plain built-in room keeps working
    for c in (a, bystander):
        joined = await c.request({"action": "join-room", "target": "plain1"}, "client-joined-room")
        assert joined["target"] == "plain1" and joined["sender"] == c.id
    await a.send({"action": "send-message", "target": "plain1", "message_body": {"text": "still here"}})
    got = await bystander.next(is_("send-message", "plain1", a.id))
    assert got["message_body"] == {"text": "still here"}
    # the lobby's other clients are not disturbed: the lobby watcher still answers them
    await bystander.send({"action": "join-room", "target": LOBBY, "message_body": {"roomname": "plain2"}})
    await bystander.next(is_("client-joined-room", "plain2", bystander.id))

    # the supervisor restarts the watcher: new PID, same title
    deadline = time.monotonic() + READY
    while (new := roles(wb, GAMES).get(GAMES)) in (None, old):
        assert time.monotonic() < deadline, "the games watcher was not restarted"
        await asyncio.sleep(0.05)  # polling the process table
    assert new != old
    assert roles(wb, LOBBY_WATCHER)[LOBBY_WATCHER] == lobby_pid

    # the restarted watcher ends the game it lost cleanly
    for c in (a, b):
        end = await c.next(is_("room-bot-end-game", room, BOT), timeout=READY)
        assert end["message_body"]["client_list"] == [] and end["message_body"]["word_list"] == []

    # and new games can be played
    await wait_for_watchers(wb.url)
    room = "fresh1"
    for c in (a, b):
        c.inbox.clear()
    await enter_friend_room(a, room, "alice", [], maker=True)
    await enter_friend_room(b, room, "bobby", [a])
    listed = await roster([a, b], room, 2)
    await a.send(to_room("start-the-game", room, {"message": room}))
    first, second = await first_word(a, b, room, listed)
    await second.send(to_room("leave-room", room, {"message": room}))
    _, end = await in_order(first, bot_line(room, "Game ended"), is_("room-bot-end-game", room, BOT))
    assert [(p["slug"], p["score"]) for p in check_ranking(end)] == [(first.id, 1)]
    # the bystander was never dropped
    await bystander.request({"action": "list-rooms", "id": "still-connected"}, "room-list")


# ------------------------------------------------------------------ 4. the processor SIGKILLed mid-game


async def test_a_game_survives_a_processor_restart(wb: Cluster, player) -> None:
    """Clients stay connected, the gateways resync their rooms, the games watcher claims
    its rooms again in its new hello: the same game goes on."""
    a, b = await player(), await player()
    room = "sturdy1"
    await start_long_game(wb, a, b, room)

    old = kill(wb, "processor")
    reply = await chat_until_the_game_answers(a, room)
    text = reply["message_body"]["message"]
    assert roles(wb, "processor")["processor"] != old
    # the game's own chat echo (avatar and colour): the games watcher still runs this room
    assert reply["message_body"]["useravatar"] == "al"
    await b.next(is_("send-message", room, a.id, message=text))


# ------------------------------------------------------------------ 5. a player's connection drops


async def test_a_dropped_player_keeps_its_seat_and_gets_the_game_back_on_resume(
        wb: Cluster, player) -> None:
    """alice's connection is lost mid-game (no closing handshake): bobby is told nothing,
    alice's turn runs out as usual; she resumes with her session: same client ID, the
    frames she missed replayed, then the game's current state for her alone (the list with
    the scores), and the game goes on with both."""
    b = await player()
    a = Client(await websockets.connect(wb.url))
    resumed: Client | None = None
    try:
        hello = (await a.expect("client-connected"))["message_body"]
        a.id, session = hello["client"], hello["session"]
        room = "Drop01"
        await start_long_game(wb, a, b, room)

        a.ws.transport.abort()
        ran_out = await b.next(lambda m: turn_msg(room)(m)
                               and "<b>alice</b> ran out of time" in m["message_body"]["message"],
                               timeout=15)
        assert {p["slug"] for p in ran_out["message_body"]["clientstats"]} == {a.id, b.id}

        resumed = Client(await websockets.connect(f"{wb.url}?resume={session}"))
        hello = (await resumed.expect("client-connected"))["message_body"]
        assert hello["resumed"] is True and hello["client"] == a.id
        resumed.id = a.id
        # what she missed (her turn running out), then her state: the list, to her only
        await resumed.next(lambda m: turn_msg(room)(m)
                           and "<b>alice</b> ran out of time" in m["message_body"]["message"])
        state = await resumed.next(is_("client-list-notify", room, BOT))
        assert [p["slug"] for p in state["message_body"]["clientsinroomessage"]] == sorted([a.id, b.id])
        assert not [m for m in b.inbox if m["action"] == "client-list-notify"], "bobby was told nothing"
        # and the game goes on with both: the next turns reach her live
        for c in (resumed, b):
            await c.next(lambda m: turn_msg(room)(m) and m["offset"] > state["offset"])
    finally:
        for c in (a, resumed):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.close()
