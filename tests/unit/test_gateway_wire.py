"""The gateway writes room frames itself: they must be what websockets would send."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from services.gateway import _text_frame


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frame_matches_websockets(n: int) -> None:
    payload = b"x" * n
    assert _text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
