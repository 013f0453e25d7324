"""The Words Battle web page in headless Chromium: two players, one short friend game.

Playwright drives Debian's Chromium (/usr/bin/chromium; `make test` installs it, no
browser is ever downloaded) against a real cluster with the Words Battle watchers.
`--time-scale 0.1`: turns last 1 s and the default 60 s game 6 s, so a page has
time to type its word.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import websockets

from services.words_battle.dictionary import english_words
from tests.conftest import Cluster

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


async def test_friend_game_in_two_browsers(cluster_factory: Callable[..., Cluster], tmp_path: Path) -> None:
    from playwright.async_api import Page, async_playwright, expect

    cluster = cluster_factory(watchers=True, args=["--time-scale", "0.1"])
    await wait_for_watchers(cluster.url)
    url = f"http://127.0.0.1:{cluster.port}/"
    room = "browser1"

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # separate contexts: each page has its own localStorage and socket
            a = await (await browser.new_context()).new_page()
            b = await (await browser.new_context()).new_page()
            errors: list[str] = []
            for p in (a, b):
                p.on("pageerror", lambda exc: errors.append(str(exc)))
                await p.goto(url)
                await expect(p.locator("#status")).to_have_attribute("data-state", "connected")
                await expect(p.locator("#lobby-screen")).to_be_visible()

            async def enter(p: Page, name: str) -> str:
                await p.fill("#player-name", name)
                await p.fill("#room-name", room)
                await p.click("#play-friend")
                await expect(p.locator("#room-screen")).to_be_visible()
                me = p.locator("#players [data-slug].is-me")
                await expect(me).to_have_count(1)  # know-yourself answered, the list names us
                slug = await me.get_attribute("data-slug")
                assert slug and slug == await p.evaluate("document.body.dataset.clientId")
                return slug

            slug_a = await enter(a, "alice")
            await expect(a.locator("#maker-controls")).to_be_visible()  # is-room-maker
            slug_b = await enter(b, "bobby")
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
            scorer = ""
            deadline = time.monotonic() + 20
            while not scorer:
                assert time.monotonic() < deadline, "no word ever scored"
                waits = {asyncio.ensure_future(p.wait_for_function(
                    "document.body.dataset.turn === 'mine' || document.body.dataset.screen === 'end'",
                    timeout=15_000)): slug for slug, p in pages.items()}
                done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                slug = waits[next(iter(done))]
                p, other = pages[slug], pages[slug_b if slug == slug_a else slug_a]
                assert await p.evaluate("document.body.dataset.screen") == "room", "the game ended first"
                letter = (await p.text_content("#current-letter") or "").strip().lower()
                assert len(letter) == 1, letter
                assert (await p.text_content("#turn-name") or "").strip() == names[slug]
                word = pick_word(letter, used)
                await p.fill("#word-input", word)
                await p.click("#send-word")
                score = p.locator(f'#players [data-slug="{slug}"] .score')
                try:
                    await expect(score).to_have_text("1", timeout=3000)
                except AssertionError:
                    continue  # the turn ran out before the word landed: try on a later turn
                used.add(word)
                scorer = slug
                await expect(other.locator(f'#players [data-slug="{slug}"] .score')).to_have_text("1")
                await expect(other.locator("#current-letter")).not_to_have_text("")

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
        finally:
            await browser.close()
