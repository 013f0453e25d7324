"""`meshstream gateway` (same flags) with a bug planted in its core: every resume raises in
`Gateway._hold`, as a resume position past 2^64 - 1 once did (issue 20, item 2). What a bug
while answering a request may cost is that request: HTTP 500 and its connection closed;
no traceback per request, and no connection slot of its address kept
(tests/integration/test_http.py).

    python -m tests.integration.faulty_gateway --run-dir DIR --port P [gateway flags]
"""

from __future__ import annotations

import sys
from typing import Any

from meshstream_zmq.gateway import Gateway
from services import cli


def planted(self: Gateway, conn: Any, now: float, resume: Any) -> None:
    raise ValueError("a bug planted by tests/integration/faulty_gateway.py")


if __name__ == "__main__":
    Gateway._hold = planted  # type: ignore[method-assign]
    sys.exit(cli.main(["gateway", *sys.argv[1:]]))
