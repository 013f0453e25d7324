"""Every error a client or watcher can be told about, in one place.

Codes are stable strings: clients and tests match on them, so never rename one.
`docs/protocol.md` lists the same table; `tests/unit/test_docs.py` keeps them equal.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """A stable error code with the human message sent alongside it."""

    message: str

    def __new__(cls, code: str, message: str) -> ErrorCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member.message = message
        return member

    # Frame-level: found by the gateway before anything is routed.
    BAD_JSON = ("bad-json", "the frame is not valid JSON")
    NOT_OBJECT = ("not-object", "the frame must be a JSON object")
    MISSING_ACTION = ("missing-action", "the frame has no action")
    BAD_ACTION = ("bad-action", "action must be a non-empty string of at most 64 characters, "
                                "with no control or bidi formatting characters")
    BAD_TARGET = ("bad-target", "target must be a string")
    BAD_BODY = ("bad-body", "message_body must be a JSON object")
    BAD_ID = ("bad-id", "id must be a string or a number (an integer from -2**63 to 2**63-1)")
    BINARY_FRAME = ("binary-frame", "binary frames are not supported; send JSON text")
    RATE_LIMITED = ("rate-limited", "too many frames; this one was not processed")
    PROCESSOR_UNAVAILABLE = ("processor-unavailable",
                             "the processor is not reachable; the frame was not processed")
    PROCESSOR_RESTARTED = ("processor-restarted",
                           "the processor restarted; this frame may not have been processed")
    MESSAGES_LOST = ("messages-lost", "the gateway missed messages from the processor; resync your state")
    BAD_TOKEN = ("bad-token", "the token is not valid for this server")
    TOKEN_EXPIRED = ("token-expired", "the token has expired")
    # Routing: decided by the processor.
    MISSING_TARGET = ("missing-target", "this action needs a target")
    BAD_ROOM_NAME = ("bad-room-name", "room names are 1 to 64 characters, "
                                      "with no control or bidi formatting characters")
    UNKNOWN_ROOM = ("unknown-room", "no such room")
    NOT_MEMBER = ("not-member", "you are not a member of this room")
    ALREADY_MEMBER = ("already-member", "you are already a member of this room")
    UNKNOWN_CLIENT = ("unknown-client", "no such client")
    FORBIDDEN = ("forbidden", "you may not do this")
    HISTORY_LOST = ("history-lost", "those messages are no longer held (or the room's epoch changed)")
    TOO_MANY_ROOMS = ("too-many-rooms", "you are in as many rooms as a client may be")
    LOBBY_READONLY = ("lobby-readonly", "mesh-global is the lobby: it only takes join-room")
    CANNOT_LEAVE_LOBBY = ("cannot-leave-lobby", "every client stays in mesh-global until it disconnects")
    UNKNOWN_SENDER = ("unknown-sender", "the processor does not know this connection yet; retry")
    WATCHER_UNAVAILABLE = ("watcher-unavailable",
                           "the watcher of this room is not connected; the frame was not processed")
    WATCHER_RESTARTED = ("watcher-restarted", "the room's watcher stopped before confirming "
                                              "this frame; it may not have been processed")
    UNKNOWN_ACTION = ("unknown-action", "this room does not handle that action")
    WATCHER_ERROR = ("watcher-error", "the room's watcher failed to handle this frame")
    # Watcher commands only.
    BAD_COMMAND = ("bad-command", "the command could not be decoded or has missing fields")
    CLAIM_CONFLICT = ("claim-conflict", "another watcher already claims this room or prefix")
    ROOM_EXISTS = ("room-exists", "the room already exists")
    UNKNOWN_WATCHER = ("unknown-watcher", "say hello before sending commands")
    # The server API only (docs/api.md): HTTP requests to /api/.
    BAD_API_KEY = ("bad-api-key", "this needs the server API key: Authorization: apikey <key>")
    NOT_FOUND = ("not-found", "no such endpoint (docs/api.md)")
    METHOD_NOT_ALLOWED = ("method-not-allowed", "this endpoint does not take that method")
    BAD_REQUEST = ("bad-request", "the HTTP request cannot be read (a POST needs Content-Length)")
    TOO_LARGE = ("too-large", "the request body is larger than the server API accepts")
    INTERNAL_ERROR = ("internal-error", "the server failed handling this (a bug, logged); "
                      "its effect is unknown")


class CloseCode:
    """WebSocket close codes the gateway uses (see docs/protocol.md)."""

    GOING_AWAY = 1001  # gateway shutting down
    POLICY = 1008  # flood past the rate limit
    TOO_BIG = 1009  # frame over the size limit (sent by websockets itself)
    INTERNAL_ERROR = 1011  # keepalive pong too late; a bug handling the client's frame
    SLOW_CONSUMER = 4000  # send queue stayed over its bound
    SERVICE_RESTART = 1012  # the gateway is restarting: resume on another
    TRY_AGAIN_LATER = 1013  # over the gateway's connection limits
    DISCONNECTED = 4001  # a watcher or the server disconnected the client
    TOKEN = 4003  # token-required, bad-token or token-expired (the reason says which)
