"""The server API (docs/api.md), without sockets: HTTP requests to /api/ in, commands out.

A backend in any stack publishes with one HTTP call. Each gateway answers the API
through one watcher of its own (`api.<gateway ID>`, claiming no rooms): a request becomes
one or more watcher commands (the same the watcher protocol has, docs/watchers.md), and
their replies become its JSON answer. This module decides everything about that and
touches nothing: `head` reads a request head, `route` turns a whole request into a
`Plan` (its commands and how their outcomes make the answer) or a `Failure`;
services/gateway.py moves the bytes and awaits the replies.

Errors are JSON, `{"error": {"code", "message"}}`, with the codes of errors.py (the
WebSocket protocol's, and the API's own: `bad-api-key`, `not-found`, …).
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import SERVER_SENDER, protocol
from . import meshstream_pb2 as pb
from .errors import CloseCode, ErrorCode
from .rooms import valid_room_name

PREFIX = "/api/"
OPENAPI = "/api/openapi.json"  # the OpenAPI document (docs/api.openapi.json), read without a key
SCHEME = "apikey"  # Authorization: apikey <key>
MAX_BATCH = 100  # requests in one /api/batch
MAX_ROOMS = 100  # rooms in one /api/broadcast
MAX_PAGE = 100  # rooms in a /api/rooms page, messages in a history page: the default and the most
MAX_MEMBERS = 1000  # members in a /api/rooms/{room} page (the default and the most)
MAX_KEY = 128  # characters of an idempotency key
MAX_ID = 256  # characters of a client ID or a user
MAX_REASON = 123  # bytes of a close reason (what a WebSocket close frame holds)
# Requests answered on one kept-alive connection: the last answer closes it (a long-lived
# connection would otherwise pin a backend to one gateway process of a port for ever)
MAX_REQUESTS = 1000
TIMEOUT = "timeout"  # the SDK's code of a command whose reply never came

# The HTTP status of each error code a command or a request can end with (others: 400).
STATUS: dict[str, int] = {
    ErrorCode.BAD_API_KEY: 401, ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404, ErrorCode.UNKNOWN_ROOM: 404, ErrorCode.UNKNOWN_CLIENT: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.NOT_MEMBER: 409, ErrorCode.ALREADY_MEMBER: 409, ErrorCode.CANNOT_LEAVE_LOBBY: 409,
    ErrorCode.HISTORY_LOST: 409, ErrorCode.ROOM_EXISTS: 409,
    ErrorCode.TOO_LARGE: 413, ErrorCode.RATE_LIMITED: 429, ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.PROCESSOR_UNAVAILABLE: 503, ErrorCode.PROCESSOR_RESTARTED: 503,
    ErrorCode.WATCHER_UNAVAILABLE: 503, ErrorCode.UNKNOWN_WATCHER: 503,
}
# What the caller is told of a code that is the API's business, not its own: the processor
# forgot the API's watcher, or never answered (the command may have been applied).
SHOWN = {ErrorCode.UNKNOWN_WATCHER.value: (ErrorCode.PROCESSOR_UNAVAILABLE.value, ""),
         TIMEOUT: (ErrorCode.PROCESSOR_RESTARTED.value,
                   "no answer from the processor in time: the request may have been applied")}


@dataclass(frozen=True, slots=True)
class Failure:
    """A request answered with an error: its HTTP status and its error code."""

    status: int
    code: str
    message: str = ""

    @classmethod
    def of(cls, code: ErrorCode | str, message: str = "") -> Failure:
        """The failure of `code` (a command's reply's, or the SDK's `timeout`)."""
        code = code.value if isinstance(code, ErrorCode) else str(code)
        if code in SHOWN:
            code, instead = SHOWN[code]
            message = instead or message
        if not message:
            known = {c.value: c for c in ErrorCode}.get(code)
            message = known.message if known is not None else code
        return cls(STATUS.get(code, 400), code, message)

    @classmethod
    def of_reply(cls, code: str, message: str) -> Failure:
        """The failure of a command's error reply, whose message may be a bare detail (a
        room's name): then after the code's own message."""
        known = {c.value: c for c in ErrorCode}.get(code)
        if known is not None and message and message != known.message and code not in SHOWN:
            message = f"{known.message}: {message}"
        return cls.of(code, message)

    def json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


Outcome = pb.Reply | Failure  # what became of one command: its successful reply, or why not
Answer = Callable[[Sequence[Outcome]], tuple[int, dict[str, Any]]]  # outcomes -> (status, JSON)


@dataclass(frozen=True, slots=True)
class Plan:
    """A request as commands: each `pb.Command`'s fields (the op and an idempotency key),
    sent together and applied by the processor in that order, and how their outcomes make
    the answer (status, JSON)."""

    commands: tuple[dict[str, Any], ...]
    answer: Answer


@dataclass(frozen=True, slots=True)
class Head:
    """A request head: method, path (percent-encoded), query string, headers (lower-cased),
    HTTP version."""

    method: str
    path: str
    query: str
    headers: Mapping[str, Sequence[str]]
    version: str = "HTTP/1.1"

    def header(self, name: str) -> str | None:
        """The one value of `name`; None if absent or given more than once."""
        values = self.headers.get(name, ())
        return values[0] if len(values) == 1 else None


# ---------------------------------------------------------------- HTTP


def is_api(head: bytes) -> bool:
    """Whether a request head (its first line) is for the API."""
    line = head.split(b"\n", 1)[0]
    parts = line.split(b" ")
    return len(parts) == 3 and parts[1].startswith(PREFIX.encode())


def head(data: bytes) -> Head | Failure:
    """Read a request head (the request line and headers, the blank line included).
    The gateway bounds its size (`--max-header-bytes`) before it comes here."""
    try:
        text = data.decode("latin-1")
    except ValueError:  # pragma: no cover - latin-1 decodes any byte
        return Failure.of(ErrorCode.BAD_REQUEST)
    lines = text.split("\n")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[0].isalpha():
        return Failure.of(ErrorCode.BAD_REQUEST, "not an HTTP/1.1 request line")
    method, target, version = parts
    if not target.startswith(PREFIX) or not target.isprintable() or not target.isascii():
        return Failure.of(ErrorCode.BAD_REQUEST, "bad request target")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            break
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or not name.isascii():
            return Failure.of(ErrorCode.BAD_REQUEST, "bad header line")
        headers.setdefault(name.lower(), []).append(value.strip())
    path, _, query = target.partition("?")
    return Head(method, path, query, headers, version)


def keep_alive(h: Head) -> bool:
    """Whether the client lets its connection be kept after the answer: HTTP/1.1 unless it
    says `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`."""
    tokens = {t.strip().lower() for v in h.headers.get("connection", ()) for t in v.split(",")}
    return "keep-alive" in tokens if h.version == "HTTP/1.0" else "close" not in tokens


def body_length(h: Head, limit: int) -> int | Failure:
    """How many body bytes follow the head: Content-Length (none: 0; a GET has none),
    at most `limit`. Chunked bodies are not read."""
    if "transfer-encoding" in h.headers:
        return Failure.of(ErrorCode.BAD_REQUEST, "Transfer-Encoding is not supported: "
                                                 "send Content-Length")
    if "content-length" not in h.headers:
        return Failure.of(ErrorCode.BAD_REQUEST, "a POST needs Content-Length") \
            if h.method == "POST" else 0
    raw = h.header("content-length")
    if raw is None or not raw.isdigit() or len(raw) > 12:
        return Failure.of(ErrorCode.BAD_REQUEST, "Content-Length must be one number")
    if int(raw) > limit:
        return Failure.of(ErrorCode.TOO_LARGE, f"the body is larger than {limit} bytes")
    return int(raw)


def authorized(h: Head, key: str) -> bool | None:
    """True: the right key; False: a wrong one (a guess); None: none given."""
    given = h.header("authorization")
    if given is None:
        return None
    scheme, _, value = given.partition(" ")
    if scheme.lower() != SCHEME or not value.strip():
        return None
    return hmac.compare_digest(value.strip().encode(), key.encode())


def encode(document: Mapping[str, Any]) -> bytes:
    """An answer's JSON body: compact UTF-8."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------- requests


class _Bad(Exception):
    """A field of a request that is not what its endpoint takes: `bad-body` (or its code)."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_BODY) -> None:
        super().__init__(message)
        self.code = code


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any | Failure:
    """Strict JSON (no NaN, no Infinity, no lone surrogates), or `bad-json`."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
        protocol.encode_body({"": value})  # 1e400 and lone surrogates cannot be sent on
    except (ValueError, RecursionError):
        return Failure.of(ErrorCode.BAD_JSON, "the body is not JSON (strict: no NaN, no Infinity, "
                                              "UTF-8 without lone surrogates)")
    return value


def _string(args: Mapping[str, Any], name: str, *, required: bool = True, most: int = MAX_ID) -> str:
    value = args.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value or len(value) > most:
        raise _Bad(f"{name} must be a string of 1 to {most} characters")
    return value


def _room(args: Mapping[str, Any], name: str = "room") -> str:
    value = args.get(name)
    if not valid_room_name(value):
        raise _Bad(f"{name}: {ErrorCode.BAD_ROOM_NAME.message}", ErrorCode.BAD_ROOM_NAME)
    return str(value)


def _data(args: Mapping[str, Any]) -> bytes:
    data = args.get("data", {})
    if not isinstance(data, dict):
        raise _Bad("data must be a JSON object (what members receive as message_body)")
    return protocol.encode_body(data)


def _action(args: Mapping[str, Any], default: str) -> str:
    action = args.get("action", default)
    if (not isinstance(action, str) or not action or len(action) > protocol.MAX_ACTION
            or protocol.has_forbidden_chars(action)):
        raise _Bad(ErrorCode.BAD_ACTION.message, ErrorCode.BAD_ACTION)
    return action


def _key(args: Mapping[str, Any]) -> dict[str, str]:
    key = args.get("idempotency_key")
    if key is None:
        return {}
    return {"idempotency_key": _string(args, "idempotency_key", most=MAX_KEY)}


def _who(args: Mapping[str, Any]) -> tuple[str, str]:
    """(client, user): exactly one of the two."""
    client = _string(args, "client", required=False)
    user = _string(args, "user", required=False)
    if bool(client) == bool(user):
        raise _Bad("give client (a client ID) or user (a token's sub), not both")
    return client, user


def _limit(query: Mapping[str, str], most: int) -> int:
    raw = query.get("limit")
    if raw is None:
        return most
    if not raw.isdigit() or len(raw) > 19:
        raise _Bad("limit must be an integer")
    return min(max(int(raw), 1), most)


def _message(action: str, target: str, data: bytes, to_client: bool = False) -> pb.ClientMessage:
    return pb.ClientMessage(action=action, target=target, body=data, sender=SERVER_SENDER,
                            is_target_client=to_client)


def _one(answer: Callable[[pb.Reply], dict[str, Any]]) -> Answer:
    """The answer of a one-command plan: `answer(reply)`, or its failure."""
    def combine(outcomes: Sequence[Outcome]) -> tuple[int, dict[str, Any]]:
        (outcome,) = outcomes
        if isinstance(outcome, Failure):
            return outcome.status, outcome.json()
        return 200, answer(outcome)
    return combine


def _position(reply: pb.Reply) -> dict[str, Any]:
    return {"offset": reply.position.offset, "epoch": reply.position.epoch}


def _reached(user: str) -> Callable[[pb.Reply], dict[str, Any]]:
    """By user: the clients it reached; by client: nothing to add."""
    return (lambda reply: {"clients": list(reply.clients)}) if user else (lambda reply: {})


def _publish(args: Mapping[str, Any], query: Mapping[str, str]) -> Plan:
    room, data = _room(args), _data(args)
    op = {"send_room": pb.SendToRoom(room=room, message=_message(_action(args, "publish"), room, data)),
          **_key(args)}
    return Plan((op,), _one(_position))


def _broadcast(args: Mapping[str, Any], query: Mapping[str, str]) -> Plan:
    rooms = args.get("rooms")
    if not isinstance(rooms, list) or not 0 < len(rooms) <= MAX_ROOMS:
        raise _Bad(f"rooms must be a list of 1 to {MAX_ROOMS} room names")
    names = [_room({"room": r}) for r in rooms]
    data, action, key = _data(args), _action(args, "publish"), _key(args)
    # one key per room: a repeat of the broadcast repeats none of its rooms' messages
    ops = tuple({"send_room": pb.SendToRoom(room=room, message=_message(action, room, data)),
                 **({"idempotency_key": f"{key['idempotency_key']}\x00{room}"[:MAX_KEY]} if key else {})}
                for room in names)

    def combine(outcomes: Sequence[Outcome]) -> tuple[int, dict[str, Any]]:
        results = [{"room": room, **(o.json() if isinstance(o, Failure) else _position(o))}
                   for room, o in zip(names, outcomes, strict=True)]
        return 200, {"results": results}
    return Plan(ops, combine)


def _send(args: Mapping[str, Any], query: Mapping[str, str]) -> Plan:
    client, user = _who(args)
    message = _message(_action(args, "send"), client, _data(args), to_client=True)
    op = {"send_clients": pb.SendToClients(clients=[client] if client else [], user=user,
                                           message=message), **_key(args)}
    return Plan((op,), _one(_reached(user)))


def _disconnect(args: Mapping[str, Any], query: Mapping[str, str]) -> Plan:
    client, user = _who(args)
    code = args.get("code", CloseCode.DISCONNECTED)
    if type(code) is not int or not (code == 1000 or 3000 <= code <= 4999):
        raise _Bad("code must be 1000 or 3000 to 4999 (default 4001)")
    reason = args.get("reason", "")
    if not isinstance(reason, str) or len(reason.encode("utf-8", "replace")) > MAX_REASON:
        raise _Bad(f"reason must be a string of at most {MAX_REASON} bytes")
    op = {"disconnect": pb.CloseClient(client=client, user=user, code=code,
                                       reason=reason or "disconnected by the server"), **_key(args)}
    return Plan((op,), _one(_reached(user)))


def _remove(args: Mapping[str, Any], query: Mapping[str, str]) -> Plan:
    room = _room(args)
    client, user = _who(args)
    op = {"remove": pb.Membership(client=client, user=user, room=room), **_key(args)}
    return Plan((op,), _one(_reached(user)))


def _rooms(args: Mapping[str, Any], query: Mapping[str, str]) -> Plan:
    op = {"query": pb.Query(what=pb.Query.ROOM_PAGE, limit=_limit(query, MAX_PAGE),
                            after=query.get("after", ""))}
    return Plan((op,), _one(lambda reply: {
        "rooms": [{"name": r.name, "members": r.count} for r in reply.rooms],
        "next": reply.next or None}))


def _room_info(args: Mapping[str, Any], query: Mapping[str, str]) -> Plan:
    room = _room(args)
    op = {"query": pb.Query(what=pb.Query.ROOM, room=room, limit=_limit(query, MAX_MEMBERS),
                            after=query.get("after", ""))}

    def answer(reply: pb.Reply) -> dict[str, Any]:
        (r,) = reply.rooms
        return {"name": r.name, "count": r.count, "epoch": r.epoch, "offset": r.offset,
                "maker": r.maker or None, "settings": dict(r.settings),
                "members": [{"client": c, "user": u or None}
                            for c, u in zip(r.members, r.users, strict=True)],
                "next": reply.next or None}
    return Plan((op,), _one(answer))


def _history(args: Mapping[str, Any], query: Mapping[str, str]) -> Plan:
    room = _room(args)
    raw = query.get("since")
    if raw is not None and (not raw.isdigit() or int(raw) > protocol.MAX_POSITION):
        raise _Bad("since must be an offset, 0 to 2**63-1")
    op = {"query": pb.Query(what=pb.Query.HISTORY, room=room, limit=_limit(query, MAX_PAGE),
                            since=None if raw is None else int(raw))}
    return Plan((op,), _one(lambda reply: {
        "epoch": reply.position.epoch, "messages": [json.loads(m) for m in reply.messages],
        "next": reply.since if reply.HasField("since") else None}))


# endpoint name -> (method, how its arguments become a plan); batch items name them too
ENDPOINTS: dict[str, tuple[str, Callable[[Mapping[str, Any], Mapping[str, str]], Plan]]] = {
    "publish": ("POST", _publish), "broadcast": ("POST", _broadcast), "send": ("POST", _send),
    "disconnect": ("POST", _disconnect), "remove": ("POST", _remove),
    "rooms": ("GET", _rooms), "room": ("GET", _room_info), "history": ("GET", _history),
}


def _batch(args: Mapping[str, Any]) -> Plan:
    """Up to MAX_BATCH requests, each `{"<endpoint>": {its body, or its query as fields}}`,
    applied in order; each answered in `results` with its own status."""
    items = args.get("requests")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        raise _Bad(f"requests must be a list of 1 to {MAX_BATCH} requests")
    plans: list[Plan | Failure] = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            plans.append(Failure.of(ErrorCode.BAD_BODY, "each request is {\"<endpoint>\": {…}}"))
            continue
        ((name, fields),) = item.items()
        if name not in ENDPOINTS or not isinstance(fields, dict):
            plans.append(Failure.of(ErrorCode.BAD_BODY, f"no endpoint {str(name)[:40]!r} "
                                    f"(one of {', '.join(ENDPOINTS)}) with an object"))
            continue
        query = {k: str(v) for k, v in fields.items() if k in ("limit", "after", "since")
                 and isinstance(v, (int, str)) and not isinstance(v, bool)}
        plans.append(_plan(ENDPOINTS[name][1], fields, query))
    ops = tuple(op for p in plans if isinstance(p, Plan) for op in p.commands)

    def combine(outcomes: Sequence[Outcome]) -> tuple[int, dict[str, Any]]:
        results, i = [], 0
        for p in plans:
            if isinstance(p, Failure):
                status, doc = p.status, p.json()
            else:
                n = len(p.commands)
                status, doc = p.answer(outcomes[i:i + n])
                i += n
            results.append({"status": status, **({"result": doc} if status == 200 else doc)})
        return 200, {"results": results}
    return Plan(ops, combine)


def _plan(make: Callable[[Mapping[str, Any], Mapping[str, str]], Plan], args: Mapping[str, Any],
          query: Mapping[str, str]) -> Plan | Failure:
    try:
        return make(args, query)
    except _Bad as exc:
        return Failure.of(exc.code, str(exc))


# Every route the API answers (docs/api.openapi.json lists the same): path -> (method, endpoint)
ROUTES: dict[str, tuple[str, str]] = {
    **{f"{PREFIX}{name}": ("POST", name)
       for name in ("publish", "broadcast", "send", "disconnect", "remove", "batch")},
    f"{PREFIX}rooms": ("GET", "rooms"), f"{PREFIX}rooms/{{room}}": ("GET", "room"),
    f"{PREFIX}rooms/{{room}}/history": ("GET", "history"), OPENAPI: ("GET", "openapi"),
}


def route(method: str, path: str, query_string: str, body: bytes) -> Plan | Failure:
    """The plan of a request whose key was checked (`path` percent-encoded, as sent)."""
    parts = path[len(PREFIX):].split("/")
    args: dict[str, Any] = {}
    template = path
    if len(parts) in (2, 3) and parts[0] == "rooms" and parts[1]:  # a room, percent-encoded
        template = "/".join([PREFIX + "rooms", "{room}", *parts[2:]])
        try:
            args["room"] = urllib.parse.unquote(parts[1], errors="strict")
        except UnicodeDecodeError:
            return Failure.of(ErrorCode.BAD_ROOM_NAME)
    if template not in ROUTES or template == OPENAPI:
        return Failure.of(ErrorCode.NOT_FOUND)
    wanted, name = ROUTES[template]
    if method != wanted and not (wanted == "GET" and method == "HEAD"):
        return Failure.of(ErrorCode.METHOD_NOT_ALLOWED, f"{path[:80]} takes {wanted}")
    query: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query_string, keep_blank_values=True):
        query.setdefault(key, value)  # the first of each wins
    if wanted == "POST":
        document = parse_json(body)
        if isinstance(document, Failure):
            return document
        if not isinstance(document, dict):
            return Failure.of(ErrorCode.NOT_OBJECT, "the body must be a JSON object")
        args = document
    if name == "batch":
        try:
            return _batch(args)
        except _Bad as exc:
            return Failure.of(exc.code, str(exc))
    return _plan(ENDPOINTS[name][1], args, query)

