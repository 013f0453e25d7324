"""The server API's pure layer (meshstream_zmq/api.py): heads, keys, bodies, routes, answers."""

from __future__ import annotations

import json

from meshstream_zmq import api
from meshstream_zmq import meshstream_pb2 as pb

KEY = "k" * 20


def head(text: str) -> api.Head:
    h = api.head(text.replace("\n", "\r\n").encode())
    assert isinstance(h, api.Head), h
    return h


def test_a_head_is_read_and_the_key_compared() -> None:
    h = head(f"POST /api/publish?x=1 HTTP/1.1\nHost: a\nAuthorization: apikey {KEY}\n"
             "Content-Length: 12\n\n")
    assert (h.method, h.path, h.query) == ("POST", "/api/publish", "x=1")
    assert api.authorized(h, KEY) is True and api.body_length(h, 100) == 12
    assert api.authorized(head("GET /api/rooms HTTP/1.1\nAuthorization: apikey nope\n\n"), KEY) is False
    assert api.authorized(head("GET /api/rooms HTTP/1.1\nAuthorization: Bearer " + KEY + "\n\n"), KEY) is None
    assert api.authorized(head("GET /api/rooms HTTP/1.1\n\n"), KEY) is None
    twice = head(f"GET /api/rooms HTTP/1.1\nAuthorization: apikey {KEY}\nAuthorization: apikey {KEY}\n\n")
    assert api.authorized(twice, KEY) is None  # which one? neither
    assert isinstance(api.head(b"GARBAGE\r\n\r\n"), api.Failure)


def test_http_1_1_is_kept_alive_unless_asked_and_http_1_0_only_when_asked() -> None:
    assert api.keep_alive(head("GET /api/rooms HTTP/1.1\n\n"))
    assert not api.keep_alive(head("GET /api/rooms HTTP/1.1\nConnection: close\n\n"))
    assert not api.keep_alive(head("GET /api/rooms HTTP/1.1\nConnection: TE, Close\n\n"))
    assert not api.keep_alive(head("GET /api/rooms HTTP/1.0\n\n"))
    assert api.keep_alive(head("GET /api/rooms HTTP/1.0\nConnection: Keep-Alive\n\n"))


def test_bodies_need_a_length_within_the_limit() -> None:
    assert api.body_length(head("GET /api/rooms HTTP/1.1\n\n"), 10) == 0
    for text, code in (("POST /api/publish HTTP/1.1\n\n", "bad-request"),
                       ("POST /api/publish HTTP/1.1\nTransfer-Encoding: chunked\n\n", "bad-request"),
                       ("POST /api/publish HTTP/1.1\nContent-Length: -1\n\n", "bad-request"),
                       ("POST /api/publish HTTP/1.1\nContent-Length: 11\n\n", "too-large")):
        failure = api.body_length(head(text), 10)
        assert isinstance(failure, api.Failure) and failure.code == code, text
    assert api.Failure.of("too-large").status == 413


def test_routes_methods_and_json() -> None:
    assert api.route("GET", "/api/nothing", "", b"") == api.Failure.of("not-found")
    assert api.route("GET", "/api/publish", "", b"").status == 405  # type: ignore[union-attr]
    assert api.route("POST", "/api/rooms", "", b"").status == 405  # type: ignore[union-attr]
    for body, code in ((b"{", "bad-json"), (b'{"room": NaN}', "bad-json"), (b'"\\ud800"', "bad-json"),
                       (b"[]", "not-object"), (b'{"room": ""}', "bad-room-name"),
                       (b'{"room": "r", "data": 3}', "bad-body"),
                       (b'{"room": "r", "action": "a\\u0000"}', "bad-action")):
        failure = api.route("POST", "/api/publish", "", body)
        assert isinstance(failure, api.Failure) and failure.code == code, body


def test_publish_is_a_room_send_with_the_issues_frame() -> None:
    plan = api.route("POST", "/api/publish", "", b'{"room":"r","data":{"a":1},"idempotency_key":"k1"}')
    assert isinstance(plan, api.Plan)
    (op,) = plan.commands
    send = op["send_room"]
    assert (send.room, send.message.action, send.message.sender, json.loads(send.message.body)) == (
        "r", "publish", "meshstream", {"a": 1})
    assert op["idempotency_key"] == "k1"
    reply = pb.Reply(position=pb.Position(epoch="e.1", offset=7))
    assert plan.answer([reply]) == (200, {"offset": 7, "epoch": "e.1"})
    assert plan.answer([api.Failure.of_reply("unknown-room", "r")]) == (
        404, {"error": {"code": "unknown-room", "message": "no such room: r"}})
    assert plan.answer([api.Failure.of("timeout", "late")])[0] == 503  # may have been applied


def test_send_disconnect_and_remove_take_a_client_or_a_user() -> None:
    plan = api.route("POST", "/api/send", "", b'{"user":"ann","data":{}}')
    assert isinstance(plan, api.Plan) and plan.commands[0]["send_clients"].user == "ann"
    assert plan.answer([pb.Reply(clients=["a", "b"])]) == (200, {"clients": ["a", "b"]})
    for body in (b'{"data":{}}', b'{"client":"c","user":"u"}'):
        assert isinstance(api.route("POST", "/api/send", "", body), api.Failure)
    plan = api.route("POST", "/api/disconnect", "", b'{"client":"c","code":4020,"reason":"x"}')
    assert isinstance(plan, api.Plan)
    close = plan.commands[0]["disconnect"]
    assert (close.client, close.code, close.reason) == ("c", 4020, "x")
    for body in (b'{"client":"c","code":1005}', b'{"client":"c","reason":"' + b"x" * 124 + b'"}'):
        assert isinstance(api.route("POST", "/api/disconnect", "", body), api.Failure)
    plan = api.route("POST", "/api/remove", "", b'{"room":"r","user":"ann"}')
    assert isinstance(plan, api.Plan) and plan.commands[0]["remove"].user == "ann"


def test_room_paths_are_percent_decoded_and_queries_bounded() -> None:
    plan = api.route("GET", "/api/rooms/a%2Fb%20c/history", "since=4&limit=1000", b"")
    assert isinstance(plan, api.Plan)
    q = plan.commands[0]["query"]
    assert (q.what, q.room, q.since, q.limit) == (pb.Query.HISTORY, "a/b c", 4, api.MAX_PAGE)
    assert isinstance(api.route("GET", "/api/rooms/r/history", "since=-1", b""), api.Failure)
    assert isinstance(api.route("GET", "/api/rooms/%ff", "", b""), api.Failure)
    plan = api.route("GET", "/api/rooms", "limit=2&after=m", b"")
    assert isinstance(plan, api.Plan)
    reply = pb.Reply(rooms=[pb.RoomState(name="n", count=3)], next="n")
    assert plan.answer([reply]) == (200, {"rooms": [{"name": "n", "members": 3}], "next": "n"})


def test_a_batch_answers_each_request_in_order() -> None:
    body = {"requests": [{"publish": {"room": "r"}}, {"nope": {}}, {"history": {"room": "r", "since": 3}},
                         {"broadcast": {"rooms": ["r", "s"], "idempotency_key": "b"}}]}
    plan = api.route("POST", "/api/batch", "", json.dumps(body).encode())
    assert isinstance(plan, api.Plan) and len(plan.commands) == 4  # publish, history, two rooms
    keys = [op.get("idempotency_key") for op in plan.commands]
    assert keys == [None, None, "b\x00r", "b\x00s"]  # each room of a broadcast its own key
    p = pb.Reply(position=pb.Position(epoch="e", offset=1))
    history = pb.Reply(position=pb.Position(epoch="e"), messages=[b'{"a":1}'])
    status, doc = plan.answer([p, history, p, api.Failure.of("unknown-room")])
    assert status == 200 and [r["status"] for r in doc["results"]] == [200, 400, 200, 200]
    assert doc["results"][2]["result"] == {"epoch": "e", "messages": [{"a": 1}], "next": None}
    assert doc["results"][3]["result"]["results"][1]["error"]["code"] == "unknown-room"
    too_many = json.dumps({"requests": [{"rooms": {}}] * 101}).encode()
    assert isinstance(api.route("POST", "/api/batch", "", too_many), api.Failure)


def test_a_broadcast_names_at_most_100_rooms() -> None:
    rooms = [f"r{i}" for i in range(101)]
    body = json.dumps({"rooms": rooms, "data": {}}).encode()
    assert isinstance(api.route("POST", "/api/broadcast", "", body), api.Failure)
    body = json.dumps({"rooms": rooms[:100], "data": {}}).encode()
    assert isinstance(api.route("POST", "/api/broadcast", "", body), api.Plan)
