"""The client JSON protocol, sans I/O: validate inbound frames, encode outbound ones.

Outbound frames are built by splicing already-encoded JSON (the body travels as
JSON text from the sender to every recipient), so a room broadcast is encoded
exactly once however many members receive it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import SERVER_SENDER
from .errors import ErrorCode

MAX_ACTION = 64
EMPTY_BODY = b"{}"

# The integers a client may send (docs/protocol.md, "Numbers"), checked where each enters:
# a position (`history` `since`, a resume's offsets) is 0..MAX_POSITION, what the uint64
# fields behind it and every index hold; any other integer (a `limit`, an integer `id`)
# is a signed 64-bit one. Outside them: `bad-body` (`bad-id` for an id); a resume's
# position is then ignored, as any malformed one.
MAX_POSITION = 2**63 - 1
MIN_INTEGER, MAX_INTEGER = -(2**63), 2**63 - 1


def is_position(value: object) -> bool:
    """An integer (not a bool) 0..MAX_POSITION."""
    return type(value) is int and 0 <= value <= MAX_POSITION


def is_integer(value: object) -> bool:
    """An integer (not a bool) MIN_INTEGER..MAX_INTEGER."""
    return type(value) is int and MIN_INTEGER <= value <= MAX_INTEGER

# Refused in actions (here) and room names (the processor): C0 and C1 controls and DEL,
# the line and paragraph separators, and every bidi formatting character (embeddings,
# overrides, isolates and the marks LRM, RLM and ALM): invisible, they make one name
# look like another or reorder what a log line or a page shows around them.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                        "\u202a-\u202e\u2066-\u2069]")


def has_forbidden_chars(text: str) -> bool:
    """True if `text` holds a control, line-separator or bidi formatting character."""
    # Every forbidden character is non-printable: most names skip the regex.
    return not text.isprintable() and _FORBIDDEN.search(text) is not None


def _compact_encoder() -> Callable[[Any], str]:
    """Compact JSON, UTF-8 kept, NaN and infinities refused (ValueError).

    `JSONEncoder.encode` builds its C encoder anew on every call; built once here it
    encodes a message body in half the time (every client frame's body is re-encoded).
    """
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return encoder.encode
    one_shot = make(None, encoder.default, json.encoder.encode_basestring, None, ":", ",",
                    False, False, False)
    return lambda value: "".join(one_shot(value, 0))


_dumps = _compact_encoder()


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400: JSON clients could not read it back
        raise ValueError("number out of range")
    return value


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# Client frames: the body and the id are re-encoded by _dumps, which refuses
# out-of-range floats, so the decoder need not call back into Python per number.
_loads = json.JSONDecoder(parse_constant=_no_constants).decode
# Watcher bodies are forwarded as they are: 1e400 is refused when decoding.
_strict_loads = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constants).decode


@dataclass(slots=True)
class Inbound:
    """A valid client frame, ready to route."""

    action: str
    target: str
    body: bytes  # compact JSON object text
    is_target_client: bool
    request_id: bytes  # JSON text of "id", or b""


@dataclass(slots=True)
class Rejected:
    """A frame that failed validation: what to tell the sender."""

    code: ErrorCode
    action: str = ""
    target: str = ""
    request_id: bytes = b""


def parse(text: str) -> Inbound | Rejected:
    """Validate one client text frame (one JSON object)."""
    try:
        return _parse(text)
    except (ValueError, RecursionError):  # NaN, 1e400, lone surrogates ("\ud800"), deep nesting
        return Rejected(ErrorCode.BAD_JSON)


def _parse(text: str) -> Inbound | Rejected:
    data = _loads(text)
    if not isinstance(data, dict):
        return Rejected(ErrorCode.NOT_OBJECT)
    request_id = b""
    if "id" in data:
        rid = data["id"]
        if (isinstance(rid, bool) or not isinstance(rid, (str, int, float))
                or (type(rid) is int and not MIN_INTEGER <= rid <= MAX_INTEGER)):
            return Rejected(ErrorCode.BAD_ID)
        request_id = _dumps(rid).encode()
    action = data.get("action")
    target = data.get("target", "")
    if target is None:
        target = ""
    if not isinstance(target, str):
        return Rejected(ErrorCode.BAD_TARGET, request_id=request_id)
    if action is None:
        return Rejected(ErrorCode.MISSING_ACTION, target=target, request_id=request_id)
    # has_forbidden_chars() inlined: a printable action (the usual one) costs no call
    if (not isinstance(action, str) or not action or len(action) > MAX_ACTION
            or (not action.isprintable() and _FORBIDDEN.search(action) is not None)):
        return Rejected(ErrorCode.BAD_ACTION, target=target, request_id=request_id)
    if not (action.isascii() and target.isascii()):
        (action + target).encode()  # a lone surrogate ("\ud800") raises: not valid text
    body = data.get("message_body")
    if body is None:
        body_json = EMPTY_BODY
    elif isinstance(body, dict):
        body_json = _dumps(body).encode() if body else EMPTY_BODY
    else:
        return Rejected(ErrorCode.BAD_BODY, action, target, request_id)
    return Inbound(action, target, body_json, data.get("IsTargetClient") is True, request_id)


def encode(
    action: str,
    target: str,
    body: bytes = EMPTY_BODY,
    sender: str = SERVER_SENDER,
    *,
    is_target_client: bool = False,
    request_id: bytes = b"",
    position: bytes = b"",
) -> bytes:
    """One outbound JSON object (no trailing newline).

    `position`: the frame's position fields, from `position()`, built once for all the
    copies of a message."""
    # Hot path (every relayed message): the head and the sender part repeat, so they
    # are encoded once and looked up (bounded caches, emptied when full).
    head = _HEADS.get((action, target))
    if head is None:
        head = ('{"action":%s,"target":%s,"message_body":' % (_dumps(action), _dumps(target))).encode()
        if len(_HEADS) >= _CACHE_MAX:
            _HEADS.clear()
        _HEADS[(action, target)] = head
    tail = _SENDERS.get(sender)
    if tail is None:
        tail = (',"sender":%s' % _dumps(sender)).encode()
        if len(_SENDERS) >= _CACHE_MAX:
            _SENDERS.clear()
        _SENDERS[sender] = tail
    if is_target_client:
        tail += b',"IsTargetClient":true'
    if request_id:
        return b"".join((head, body or EMPTY_BODY, tail, position, b',"id":', request_id, b"}"))
    return b"".join((head, body or EMPTY_BODY, tail, position, b"}"))


_CACHE_MAX = 4096
_HEADS: dict[tuple[str, str], bytes] = {}
_SENDERS: dict[str, bytes] = {}


def position_format(epoch: str) -> bytes:
    """`position_format(epoch) % offset` is `position(offset, epoch)`: every stream (a room,
    or a client's direct messages) keeps its own, so numbering a message costs one
    formatting."""
    return b',"offset":%d,"epoch":' + _dumps(epoch).replace("%", "%%").encode()


def position(offset: int, epoch: str) -> bytes:
    """The position fields of a frame, `,"offset":N,"epoch":E`: N its place in its stream
    (a room's messages, or its recipient's direct messages; 1, 2, 3… with no gap), E the
    stream's epoch (a room's: "<processor epoch>.<n>"; a client's direct messages': the
    processor's). docs/protocol.md, Positions."""
    return position_format(epoch) % offset


def stamp(frame: bytes, position: bytes) -> bytes:
    """A frame built elsewhere (a watcher's), with its `position` fields added."""
    return b"".join((frame[:-1], position, b"}"))


def is_json_object(body: bytes) -> bool:
    """Strict check of a body from a watcher (empty means {}): what clients can parse."""
    if not body:
        return True
    try:
        return isinstance(_strict_loads(body.decode()), dict)
    except (ValueError, RecursionError):
        return False


def decode_body(body: bytes) -> dict[str, Any]:
    """A message_body as forwarded (compact JSON of an object, already validated)."""
    value = json.loads(body) if body else {}
    return value if isinstance(value, dict) else {}


def encode_body(body: dict[str, Any]) -> bytes:
    return _dumps(body).encode()


def error(
    code: ErrorCode,
    *,
    action: str = "",
    target: str = "",
    request_id: bytes = b"",
    detail: str = "",
) -> bytes:
    """The error frame for `code`, echoing the offending action, target and id."""
    body: dict[str, Any] = {"code": code.value, "message": detail or code.message}
    if action:
        body["action"] = action
    return encode("error", target, encode_body(body), request_id=request_id)
