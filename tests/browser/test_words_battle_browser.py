"""The Words Battle web page in headless Chromium: two players, one short friend game.

Playwright drives Debian's Chromium (/usr/bin/chromium; `make test` installs it, no
browser is ever downloaded) against a real cluster with the Words Battle watchers.
`--time-scale 0.1`: turns last 1 s and the default 60 s game 6 s, so a page has
time to type its word.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import websockets

from services.words_battle.dictionary import english_words
from tests.conftest import Cluster

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="/usr/bin/chromium is missing (`make test` installs Debian's chromium)"),
]

FAVOURITES = {"w": "water", "r": "river", "e": "eagle", "t": "tiger", "n": "night", "l": "lemon"}


def pick_word(letter: str, used: set[str]) -> str:
    """A real word starting with `letter` that was not played yet."""
    fav = FAVOURITES.get(letter)
    if fav and fav not in used:
        return fav
    return min((w for w in english_words() if w.startswith(letter) and 4 <= len(w) <= 7 and w not in used),
               key=lambda w: (len(w), w))


async def wait_for_watchers(url: str, timeout: float = 30) -> None:
    """Poll with a deadline until the lobby makes a Words Battle room and the games watcher
    welcomes a player in it (fresh room name each try)."""
    deadline = time.monotonic() + timeout
    async with websockets.connect(url) as ws:
        for n in itertools.count(1):
            room = f"bprobe{n}"
            await ws.send(json.dumps({"action": "join-room", "target": "mesh-global", "message_body": {
                "roomname": room, "playerlimit": 3, "setplayername": "probe"}}))
            reply = None
            while reply is None:
                frame = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
                for line in str(frame).splitlines():
                    msg = json.loads(line)
                    if msg.get("action") in ("know-yourself", "client-joined-room",
                                             "fail-join-room-notify", "error"):
                        reply = msg
                        break
            if reply["action"] == "know-yourself":
                return  # closing the socket empties the probe room
            if reply["action"] == "client-joined-room":  # the lobby has not claimed mesh-global yet
                await ws.send(json.dumps({"action": "leave-room", "target": room}))
            assert time.monotonic() < deadline, f"Words Battle watchers not ready: {reply}"
            await asyncio.sleep(0.1)  # polling interval


async def enter(p: Page, name: str, room: str) -> str:
    """Join the friend room from the lobby; the page's slug (its client ID)."""
    from playwright.async_api import expect

    await p.fill("#player-name", name)
    await p.fill("#room-name", room)
    await p.click("#play-friend")
    await expect(p.locator("#room-screen")).to_be_visible()
    me = p.locator("#players [data-slug].is-me")
    await expect(me).to_have_count(1)  # know-yourself answered, the list names us
    slug = await me.get_attribute("data-slug")
    assert slug and slug == await p.evaluate("document.body.dataset.clientId")
    return slug


async def score_a_word(pages: dict[str, Page], names: dict[str, str], used: set[str],
                       scores: dict[str, int], timeout: float = 20) -> str:
    """Play turns until a word scores: the page whose turn it is types a word starting with
    the shown letter. Returns the scorer's slug, once every page shows its new score (and
    the word in the chat); `scores` (slug -> points) is updated."""
    from playwright.async_api import expect

    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "no word ever scored"
        waits = {asyncio.ensure_future(p.wait_for_function(
            "document.body.dataset.turn === 'mine' || document.body.dataset.screen === 'end'",
            timeout=15_000)): slug for slug, p in pages.items()}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        slug = waits[next(iter(done))]
        p = pages[slug]
        assert await p.evaluate("document.body.dataset.screen") == "room", "the game ended first"
        letter = (await p.text_content("#current-letter") or "").strip().lower()
        assert len(letter) == 1, letter
        assert (await p.text_content("#turn-name") or "").strip() == names[slug]
        word = pick_word(letter, used)
        await p.fill("#word-input", word)
        await p.click("#send-word")
        points = str(scores.get(slug, 0) + 1)
        try:
            await expect(p.locator(f'#players [data-slug="{slug}"] .score')).to_have_text(points,
                                                                                          timeout=3000)
        except AssertionError:
            continue  # the turn ran out before the word landed: try on a later turn
        used.add(word)
        scores[slug] = scores.get(slug, 0) + 1
        for other in pages.values():
            await expect(other.locator(f'#players [data-slug="{slug}"] .score')).to_have_text(points)
            await expect(other.locator("#chat-log .msg-chat .text", has_text=word)).not_to_have_count(0)
            await expect(other.locator("#current-letter")).not_to_have_text("")
        return slug


@contextlib.asynccontextmanager
async def two_pages() -> AsyncIterator[tuple[Page, Page, list[str]]]:
    """Two pages of Debian's Chromium in separate contexts (each its own localStorage and
    socket), their uncaught errors collected; the browser is closed after."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            a = await (await browser.new_context()).new_page()
            b = await (await browser.new_context()).new_page()
            errors: list[str] = []
            for p in (a, b):
                p.on("pageerror", lambda exc: errors.append(str(exc)))
            yield a, b, errors
        finally:
            await browser.close()


async def test_friend_game_in_two_browsers(cluster_factory: Callable[..., Cluster], tmp_path: Path) -> None:
    from playwright.async_api import expect

    cluster = cluster_factory(watchers=True, args=["--time-scale", "0.1"])
    await wait_for_watchers(cluster.url)
    url = f"http://127.0.0.1:{cluster.port}/"
    room = "browser1"

    async with two_pages() as (a, b, errors):
        for p in (a, b):
            await p.goto(url)
            await expect(p.locator("#status")).to_have_attribute("data-state", "connected")
            await expect(p.locator("#lobby-screen")).to_be_visible()

        slug_a = await enter(a, "alice", room)
        await expect(a.locator("#maker-controls")).to_be_visible()  # is-room-maker
        slug_b = await enter(b, "bobby", room)
        await expect(b.locator("#maker-controls")).to_be_hidden()
        for p in (a, b):
            await expect(p.locator("#players [data-slug]")).to_have_count(2)
        pages = {slug_a: a, slug_b: b}
        names = {slug_a: "alice", slug_b: "bobby"}

        await a.click("#start-game")
        for p in (a, b):
            await expect(p.locator("#maker-controls")).to_be_hidden()
            await expect(p.locator("body")).to_have_attribute("data-turn", "chat")

        # the player whose turn it is types a word starting with the shown letter
        used: set[str] = set()
        scorer = await score_a_word(pages, names, used, {})

        # the 6 s game ends by itself: both pages show the ranking
        for p in (a, b):
            await expect(p.locator("#end-screen")).to_be_visible(timeout=20_000)
            rows = p.locator("#ranking li")
            await expect(rows).to_have_count(2)
            await expect(rows.first).to_have_attribute("data-slug", scorer)
            await expect(rows.first.locator(".score")).to_have_text("1")
            await expect(rows.nth(1).locator(".score")).to_have_text("0")
            await expect(p.locator("#word-list")).to_contain_text(next(iter(used)))
        await expect(pages[scorer].locator("#end-title")).to_have_text("You win!")
        for name, p in (("a", a), ("b", b)):
            await p.screenshot(path=str(tmp_path / f"end-{name}.png"), full_page=True)
        assert not errors, errors


def gateway_of(client_id: str) -> int:
    """Client IDs look like 'gw<index>-<epoch>.<n>'."""
    head = client_id.partition("-")[0]
    assert head.startswith("gw"), client_id
    return int(head[2:])


async def test_a_page_resumes_the_game_when_its_gateway_is_killed(
        cluster_factory: Callable[..., Cluster], tmp_path: Path) -> None:
    """Two pages on different gateways play; the gateway of one is SIGKILLed mid-game. That
    page reconnects by itself (to the other gateway, or the restarted one), resumes its
    session (same client ID, same seat and score) and the game goes on on both pages: a
    word scored after the kill shows on both. Neither page reloads."""
    from playwright.async_api import expect

    # 0.3: turns of 3 s, and the 120 s game (set below) lasts 36 s
    cluster = cluster_factory(watchers=True, args=["--time-scale", "0.3"])
    await wait_for_watchers(cluster.url)
    url = f"http://127.0.0.1:{cluster.port}/"
    room = "resume1"

    async with two_pages() as (a, b, errors):
        gateway: dict[Page, int] = {}
        for p in (a, b):
            # the kernel spreads connections over the two gateways: load b again (still
            # in the lobby) until it is on the other gateway than a
            for _ in range(40):
                await p.goto(url)
                await expect(p.locator("#status")).to_have_attribute("data-state", "connected")
                await p.wait_for_function("!!document.body.dataset.clientId")
                gateway[p] = gateway_of(await p.evaluate("document.body.dataset.clientId"))
                if p is a or gateway[b] != gateway[a]:
                    break
            assert await p.evaluate("typeof window.meshstream.resume.session") == "string"
            assert await p.evaluate("window.meshstream.resume.session") != "", \
                "client-connected carries a session"
        assert gateway[a] != gateway[b]

        slug_a = await enter(a, "alice", room)
        slug_b = await enter(b, "bobby", room)
        pages = {slug_a: a, slug_b: b}
        names = {slug_a: "alice", slug_b: "bobby"}
        await a.fill("#setting-duration", "120")
        await a.click("#apply-settings")
        await expect(b.locator("#chat-log")).to_contain_text("120 seconds")
        await a.click("#start-game")

        used: set[str] = set()
        scores: dict[str, int] = {}
        await score_a_word(pages, names, used, scores, timeout=30)
        for p in (a, b):
            await p.evaluate("window.__sameDocument = true")  # gone if the page reloads

        old_pid = cluster.kill(f"gateway {gateway[a]}")
        # a notices, reconnects and resumes by itself, with the same client ID
        await a.wait_for_function("document.body.dataset.connection === 'resumed'",
                                  timeout=20_000)
        await expect(a.locator("#status")).to_have_attribute("data-state", "connected")
        assert await a.evaluate("document.body.dataset.clientId") == slug_a
        assert await a.evaluate("document.body.dataset.screen") == "room"
        for p in (a, b):  # seats and scores kept
            for slug in pages:
                await expect(p.locator(f'#players [data-slug="{slug}"] .score')).to_have_text(
                    str(scores.get(slug, 0)))
        assert not await b.evaluate("document.body.dataset.connection === 'resuming'")

        # the game goes on: a word scored after the kill shows on both pages
        await score_a_word(pages, names, used, scores, timeout=30)
        for p in (a, b):
            assert await p.evaluate("window.__sameDocument === true"), "the page reloaded"
            assert await p.evaluate("document.body.dataset.screen") == "room"
        assert cluster.roles("gateway").get(f"gateway {gateway[a]}") != old_pid
        for name, p in (("a", a), ("b", b)):
            await p.screenshot(path=str(tmp_path / f"resumed-{name}.png"), full_page=True)
        assert not errors, errors
