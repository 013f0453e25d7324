"""The docs are part of the contract: every error code is documented."""

from __future__ import annotations

from pathlib import Path

from meshstream_zmq.errors import ErrorCode

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_error_code_is_documented() -> None:
    text = "".join((DOCS / name).read_text() for name in ("protocol.md", "watchers.md", "api.md"))
    missing = [code.value for code in ErrorCode if f"`{code.value}`" not in text]
    assert not missing, f"undocumented error codes: {missing}"


def test_close_codes_are_documented() -> None:
    from meshstream_zmq.errors import CloseCode

    text = (DOCS / "protocol.md").read_text()
    for name in ("GOING_AWAY", "POLICY", "TOO_BIG", "SLOW_CONSUMER", "DISCONNECTED", "TRY_AGAIN_LATER",
                 "TOKEN"):
        assert f"| {getattr(CloseCode, name)} |" in text, name
