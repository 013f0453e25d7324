"""The admin page in headless Chromium against a real cluster: it opens with the admin
token, shows the connections as clients come, draws the message rate as they talk, and
searches rooms. Its final state is the screenshot in docs/operations.md (docs/admin.png,
rewritten when MESHSTREAM_SCREENSHOT=1)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import websockets

from tests.browser.test_words_battle_browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import Cluster

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="/usr/bin/chromium is missing (`make test` installs Debian's chromium)"),
]

TOKEN = "admin-browser-token"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "admin.png"


async def test_admin_page_follows_the_cluster_live(cluster_factory: Callable[..., Cluster]) -> None:
    from playwright.async_api import async_playwright, expect

    cluster = cluster_factory(args=["--admin-token", TOKEN])
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"http://127.0.0.1:{cluster.port}/admin?token={TOKEN}")
            assert "token" not in page.url  # kept in sessionStorage, not in the address bar
            await expect(page.locator("#status")).to_have_text("live")
            await expect(page.locator("#gateway-count")).to_have_text("2")
            await expect(page.locator("#connections")).to_have_text("0")
            await expect(page.locator("#processes tbody tr")).to_have_count(3)  # processor, 2 gateways

            clients = [await websockets.connect(cluster.url) for _ in range(3)]
            try:
                for n, ws in enumerate(clients):
                    await ws.send(json.dumps({"action": "join-room", "target": "team-red"}))
                    await ws.send(json.dumps({"action": "join-room", "target": f"solo-{n}"}))
                await expect(page.locator("#connections")).to_have_text("3")
                await expect(page.locator("#clients")).to_have_text("3")
                for i in range(30):
                    await clients[i % 3].send(json.dumps({
                        "action": "send-message", "target": "team-red", "message_body": {"n": i}}))
                # The charts change: messages and deliveries (3 members each) were counted.
                await page.wait_for_function(
                    "Number(document.getElementById('chart-messages').dataset.peak) > 0"
                    " && Number(document.getElementById('chart-deliveries').dataset.peak) > 0")
                points = await page.locator("#chart-messages polyline").get_attribute("points")
                assert points and len(points.split()) >= 2

                room = page.locator("#rooms tbody tr", has_text="team-red")
                await expect(room).to_contain_text("3")
                await page.fill("#search", "solo")
                await expect(page.locator("#rooms tbody tr")).to_have_count(3)
                await expect(page.locator("#rooms-matching")).to_have_text("3 of 5 match")
                if os.environ.get("MESHSTREAM_SCREENSHOT") == "1" or not SCREENSHOT.exists():
                    await page.fill("#search", "")
                    await expect(page.locator("#rooms tbody tr")).to_have_count(5)
                    await page.screenshot(path=str(SCREENSHOT), full_page=True)
            finally:
                for ws in clients:
                    await ws.close()
            await expect(page.locator("#connections")).to_have_text("0")
            assert errors == []
        finally:
            await browser.close()
