"""The gateway's static files (`/` from --web-dir, `/client/`): read once at start, never
from disk in the event loop (issue 16), only files directly in their directory, bounded."""

from __future__ import annotations

import os
from pathlib import Path

from services.gateway import MAX_STATIC_FILE, static_files


def test_files_directly_in_a_root_are_served_from_memory(tmp_path: Path) -> None:
    web, outside = tmp_path / "web", tmp_path / "outside"
    web.mkdir()
    outside.mkdir()
    (web / "index.html").write_text("<p>hi</p>")
    (web / "app.js").write_text("let x")
    (web / "sub").mkdir()
    (web / "sub" / "deep.html").write_text("no")
    (outside / "secret.txt").write_text("no")
    (web / "link.txt").symlink_to(outside / "secret.txt")  # leaves its root: not served
    (web / "inside.txt").symlink_to(web / "app.js")  # stays in it: served
    with open(web / "huge.bin", "wb") as f:  # sparse: costs no disk
        f.truncate(MAX_STATIC_FILE + 1)
    served = static_files({"/": web, "/client/": tmp_path / "missing"})
    assert set(served) == {"/", "/index.html", "/app.js", "/inside.txt"}
    assert served["/"] == served["/index.html"] == (b"<p>hi</p>", "text/html; charset=utf-8")
    assert served["/app.js"][1] == "text/javascript; charset=utf-8"
    os.remove(web / "app.js")  # read once: a request reads nothing from disk
    assert served["/app.js"][0] == b"let x"
