"""The client JSON protocol codec: what a client may send, and the exact frames it gets back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream_zmq import SERVER_SENDER, protocol
from meshstream_zmq.errors import ErrorCode

from .outbox import decode


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def inbound(text: str) -> protocol.Inbound:
    parsed = protocol.parse(text)
    assert isinstance(parsed, protocol.Inbound), parsed
    return parsed


# ====================================================================== rejections


@pytest.mark.parametrize("text", ["", " ", "{", "not json", "{'action': 'a'}", '{"action": "a",}',
                                  '{"action": "a"} {}', "\x00"])
def test_bad_json(text: str) -> None:
    assert protocol.parse(text) == protocol.Rejected(ErrorCode.BAD_JSON)


@pytest.mark.parametrize("text", ["[]", '[{"action": "a"}]', "1", '"join-room"', "null", "true"])
def test_not_an_object(text: str) -> None:
    assert protocol.parse(text) == protocol.Rejected(ErrorCode.NOT_OBJECT)


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, protocol.Rejected(ErrorCode.MISSING_ACTION)),
    ({"action": None}, protocol.Rejected(ErrorCode.MISSING_ACTION)),
    ({"target": "r", "id": 4}, protocol.Rejected(ErrorCode.MISSING_ACTION, target="r", request_id=b"4")),
    ({"message_body": {"roomname": "r"}}, protocol.Rejected(ErrorCode.MISSING_ACTION)),
])
def test_missing_action(fields: dict[str, Any], expected: protocol.Rejected) -> None:
    assert protocol.parse(frame(**fields)) == expected


@pytest.mark.parametrize("action", [5, 1.5, True, [], ["join-room"], {}, {"a": 1}, "", "a" * 65],
                         ids=["int", "float", "bool", "empty-list", "list", "empty-object", "object",
                              "empty", "65-chars"])
def test_bad_action(action: Any) -> None:
    assert protocol.parse(frame(action=action, target="r", id="x")) == protocol.Rejected(
        ErrorCode.BAD_ACTION, target="r", request_id=b'"x"')


def test_an_action_of_64_characters_is_fine() -> None:
    assert inbound(frame(action="a" * 64)).action == "a" * 64


def test_action_length_counts_characters_not_bytes() -> None:
    assert inbound(frame(action="é" * 64)).action == "é" * 64


FORBIDDEN = ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f",
             "\u061c", "\u200e", "\u200f", "\u2028", "\u2029", "\u202a", "\u202b", "\u202c",
             "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


@pytest.mark.parametrize("char", FORBIDDEN, ids=[f"U+{ord(c):04X}" for c in FORBIDDEN])
def test_control_and_bidi_characters_in_an_action_are_bad_action(char: str) -> None:
    for action in (char, f"say{char}", f"{char}say", f"caf\u00e9{char}"):
        assert protocol.has_forbidden_chars(action)
        assert protocol.parse(frame(action=action, target="r", id=1)) == protocol.Rejected(
            ErrorCode.BAD_ACTION, target="r", request_id=b"1")


@pytest.mark.parametrize("action", [
    "send-message", "say hi", "caf\u00e9", "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627",
    "\U0001f600", "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a ZWJ emoji sequence
    "\u00a0nbsp", "\u200cnon-joiner", "\ufeffbom",
])
def test_other_text_is_a_fine_action(action: str) -> None:
    assert not protocol.has_forbidden_chars(action)
    assert inbound(frame(action=action)).action == action


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_the_forbidden_character_predicate_is_exactly_its_classes(text: str) -> None:
    def forbidden(c: str) -> bool:
        n = ord(c)
        return (n < 0x20 or 0x7F <= n <= 0x9F or n in (0x061C, 0x200E, 0x200F, 0x2028, 0x2029)
                or 0x202A <= n <= 0x202E or 0x2066 <= n <= 0x2069)
    assert protocol.has_forbidden_chars(text) == any(forbidden(c) for c in text)


@pytest.mark.parametrize("target", [5, True, False, [], ["r"], {"room": "r"}])
def test_bad_target(target: Any) -> None:
    assert protocol.parse(frame(action="a", target=target, id=2)) == protocol.Rejected(
        ErrorCode.BAD_TARGET, request_id=b"2")


@pytest.mark.parametrize("body", [[], [{"a": 1}], "text", "", 5, 0, True, False])
def test_bad_body(body: Any) -> None:
    assert protocol.parse(frame(action="say", target="r", message_body=body, id="i")) == protocol.Rejected(
        ErrorCode.BAD_BODY, "say", "r", b'"i"')


@pytest.mark.parametrize("rid", [True, False, None, {}, {"n": 1}, [], [1], 2**63, -(2**63) - 1],
                         ids=["true", "false", "null", "empty-object", "object", "empty-list", "list",
                              "2**63", "-2**63-1"])
def test_bad_id(rid: Any) -> None:
    assert protocol.parse(frame(action="a", target="r", id=rid)) == protocol.Rejected(ErrorCode.BAD_ID)


def test_a_bad_id_is_reported_before_anything_else() -> None:
    assert protocol.parse(frame(id=True, target=5)) == protocol.Rejected(ErrorCode.BAD_ID)


def test_rejections_carry_what_is_known_for_the_error_reply() -> None:
    rejected = protocol.parse(frame(action="say", target="r", message_body=[1], id=9))
    assert isinstance(rejected, protocol.Rejected)
    reply = decode(protocol.error(rejected.code, action=rejected.action, target=rejected.target,
                                  request_id=rejected.request_id))
    assert reply == {"action": "error", "target": "r", "sender": SERVER_SENDER, "id": 9,
                     "message_body": {"code": "bad-body", "message": ErrorCode.BAD_BODY.message,
                                      "action": "say"}}


# ====================================================================== accepted frames


def test_a_full_frame() -> None:
    parsed = inbound(frame(action="send-message", target="r", message_body={"text": "hi", "n": [1, 2]},
                           id="req-1", IsTargetClient=False))
    assert parsed == protocol.Inbound("send-message", "r", b'{"text":"hi","n":[1,2]}', False, b'"req-1"')


def test_only_action_is_required() -> None:
    assert inbound(frame(action="list-rooms")) == protocol.Inbound("list-rooms", "", b"{}", False, b"")


@pytest.mark.parametrize("body", [None, {}], ids=["null", "empty"])
def test_an_absent_null_or_empty_body_is_an_empty_object(body: Any) -> None:
    assert inbound(frame(action="a", message_body=body)).body == protocol.EMPTY_BODY


def test_a_null_target_is_no_target() -> None:
    assert inbound(frame(action="a", target=None)).target == ""


def test_the_body_is_compact_json_and_keeps_unicode() -> None:
    parsed = inbound('{ "action" : "a" , "message_body" : { "text" : "héllo ✓ 😀", "q": "\\"" } }')
    assert parsed.body == '{"text":"héllo ✓ 😀","q":"\\""}'.encode()
    assert json.loads(parsed.body) == {"text": "héllo ✓ 😀", "q": '"'}


def test_a_sender_from_the_client_is_dropped() -> None:
    parsed = inbound(frame(action="a", target="r", sender="someone-else"))
    assert "someone-else" not in repr(parsed)


def test_unknown_fields_are_ignored() -> None:
    parsed = inbound(frame(action="a", extra={"x": 1}, roomname="r"))
    assert parsed == protocol.Inbound("a", "", b"{}", False, b"")


@pytest.mark.parametrize(("rid", "raw"), [
    ("abc", b'"abc"'),
    ("", b'""'),
    ("é \"q\"", '"é \\"q\\""'.encode()),
    (7, b"7"),
    (0, b"0"),
    (-12, b"-12"),
    (2**63 - 1, str(2**63 - 1).encode()),  # the largest (docs/protocol.md, Numbers)
    (-(2**63), str(-(2**63)).encode()),
    (1.5, b"1.5"),
])
def test_the_id_is_kept_as_raw_json(rid: Any, raw: bytes) -> None:
    parsed = inbound(frame(action="a", id=rid))
    assert parsed.request_id == raw
    echoed = decode(protocol.encode("reply", "", request_id=parsed.request_id))
    assert echoed["id"] == rid and type(echoed["id"]) is type(rid)


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), (None, False), (1, False), ("true", False), ({}, False), ("", False),
])
def test_is_target_client_only_when_exactly_true(value: Any, expected: bool) -> None:
    assert inbound(frame(action="a", target="g1.1", IsTargetClient=value)).is_target_client is expected


def test_is_target_client_is_case_sensitive() -> None:
    assert not inbound(frame(action="a", target="g1.1", isTargetClient=True)).is_target_client


# ====================================================================== encode


def test_encode_has_exactly_the_envelope_fields() -> None:
    out = protocol.encode("send-message", "r", b'{"text":"hi"}', "g1.1")
    assert decode(out) == {"action": "send-message", "target": "r", "message_body": {"text": "hi"},
                           "sender": "g1.1"}
    assert b"\n" not in out


def test_encode_defaults() -> None:
    assert decode(protocol.encode("room-list", "")) == {"action": "room-list", "target": "",
                                                        "message_body": {}, "sender": SERVER_SENDER}
    assert decode(protocol.encode("a", "r", b"")) ["message_body"] == {}


def test_encode_with_is_target_client_and_id() -> None:
    out = decode(protocol.encode("dm", "g2.1", b"{}", "g1.1", is_target_client=True, request_id=b'"q"'))
    assert out == {"action": "dm", "target": "g2.1", "message_body": {}, "sender": "g1.1",
                   "IsTargetClient": True, "id": "q"}


def test_encode_escapes_strings() -> None:
    tricky = 'a"b\\c\nd\u2028é😀</script>'
    out = protocol.encode(tricky, tricky, b"{}", tricky)
    assert b"\n" not in out  # frames are newline-separated
    assert decode(out) == {"action": tricky, "target": tricky, "message_body": {}, "sender": tricky}


def test_encode_with_a_position() -> None:
    room = decode(protocol.encode("chat", "r", b'{"n":1}', "g1.1", request_id=b"4",
                                  position=protocol.position(7, "ep.3")))
    assert room == {"action": "chat", "target": "r", "message_body": {"n": 1}, "sender": "g1.1",
                    "offset": 7, "epoch": "ep.3", "id": 4}
    direct = decode(protocol.encode("dm", "g2.1", b"{}", "g1.1", is_target_client=True,
                                    position=protocol.position(3, "ep")))
    assert (direct["offset"], direct["epoch"], direct["IsTargetClient"]) == (3, "ep", True)
    built = protocol.encode("state", "r", b"{}", "bot", request_id=b'"x"')
    odd = 'e"q%d'  # escaped in JSON, and no formatting directive
    assert decode(protocol.stamp(built, protocol.position(2, odd))) == {
        **decode(built), "offset": 2, "epoch": odd}
    assert protocol.position_format("ep.3") % 7 == protocol.position(7, "ep.3")
    assert protocol.position_format(odd) % 9 == protocol.position(9, odd)


def test_encode_stays_right_past_its_caches() -> None:
    """encode() caches encoded heads and senders; filling and emptying them changes no output."""
    for n in range(protocol._CACHE_MAX + 50):
        out = protocol.encode("a", f"r{n}", b'{"n":%d}' % n, f"g1.{n}", request_id=b"%d" % n)
        if n % 997 == 0 or n >= protocol._CACHE_MAX:
            assert decode(out) == {"action": "a", "target": f"r{n}", "message_body": {"n": n},
                                   "sender": f"g1.{n}", "id": n}
    first = protocol.encode("x", "t", b"{}", "s", is_target_client=True)
    again = protocol.encode("x", "t", b"{}", "s")
    assert decode(first)["IsTargetClient"] is True and "IsTargetClient" not in decode(again)


def test_encode_body() -> None:
    assert protocol.encode_body({"client": "g1.1", "room": "é"}) == '{"client":"g1.1","room":"é"}'.encode()


# ====================================================================== error frames


def test_error_shape_with_action_and_id() -> None:
    out = decode(protocol.error(ErrorCode.UNKNOWN_ROOM, action="send-message", target="r", request_id=b"5"))
    assert out == {"action": "error", "target": "r", "sender": SERVER_SENDER, "id": 5,
                   "message_body": {"code": "unknown-room", "message": "no such room",
                                    "action": "send-message"}}


def test_error_shape_without_action_or_id() -> None:
    out = decode(protocol.error(ErrorCode.BAD_JSON))
    assert out == {"action": "error", "target": "", "sender": SERVER_SENDER,
                   "message_body": {"code": "bad-json", "message": ErrorCode.BAD_JSON.message}}


def test_error_detail_replaces_the_message() -> None:
    out = decode(protocol.error(ErrorCode.RATE_LIMITED, detail="slow down"))
    assert out["message_body"] == {"code": "rate-limited", "message": "slow down"}


@pytest.mark.parametrize("code", list(ErrorCode), ids=[c.value for c in ErrorCode])
def test_every_error_code_makes_a_valid_frame(code: ErrorCode) -> None:
    out = decode(protocol.error(code, action="x", request_id=b'"r"'))
    assert out["message_body"]["code"] == code.value and out["message_body"]["message"]


def test_error_codes_are_unique_kebab_case() -> None:
    values = [c.value for c in ErrorCode]
    assert len(values) == len(set(values))
    for value in values:
        assert value == value.lower() and " " not in value and "_" not in value


# ====================================================================== properties

json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
envelope_keys = st.sampled_from(["action", "target", "message_body", "id", "IsTargetClient", "sender"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_never_raises_on_any_text(text: str) -> None:
    assert isinstance(protocol.parse(text), (protocol.Inbound, protocol.Rejected))


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(envelope_keys | st.text(max_size=5), json_values, max_size=6))
def test_parse_never_raises_and_accepted_frames_encode_to_valid_json(fields: dict[str, Any]) -> None:
    parsed = protocol.parse(json.dumps(fields))
    if isinstance(parsed, protocol.Rejected):
        decode(protocol.error(parsed.code, action=parsed.action, target=parsed.target,
                              request_id=parsed.request_id))
        return
    out = protocol.encode(parsed.action, parsed.target, parsed.body, "g1.1",
                          is_target_client=parsed.is_target_client, request_id=parsed.request_id)
    assert b"\n" not in out
    message = decode(out)
    assert message["action"] == fields["action"]
    assert message["message_body"] == (fields.get("message_body") or {})
    assert message["sender"] == "g1.1"
    if "id" in fields:
        assert message["id"] == fields["id"]


@settings(max_examples=100, deadline=None)
@given(action=st.text(min_size=1, max_size=64).filter(lambda a: not protocol.has_forbidden_chars(a)),
       target=st.text(max_size=70),
       body=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
       rid=st.none() | st.text(max_size=10) | st.integers(-(2**63), 2**63 - 1),
       to_client=st.booleans())
def test_a_valid_envelope_round_trips(action: str, target: str, body: dict[str, Any], rid: Any,
                                      to_client: bool) -> None:
    fields: dict[str, Any] = {"action": action, "target": target, "message_body": body,
                              "IsTargetClient": to_client}
    if rid is not None:
        fields["id"] = rid
    parsed = inbound(json.dumps(fields, ensure_ascii=False))
    assert (parsed.action, parsed.target, parsed.is_target_client) == (action, target, to_client)
    assert json.loads(parsed.body) == body
    message = decode(protocol.encode(parsed.action, parsed.target, parsed.body, "s",
                                     is_target_client=parsed.is_target_client, request_id=parsed.request_id))
    expected: dict[str, Any] = {"action": action, "target": target, "message_body": body, "sender": "s"}
    if to_client:
        expected["IsTargetClient"] = True
    if rid is not None:
        expected["id"] = rid
    assert message == expected


# ====================================================================== known defects


def _accepted_frames_are_strict_json(text: str) -> None:
    parsed = protocol.parse(text)
    if isinstance(parsed, protocol.Rejected):
        return
    decode(protocol.encode(parsed.action, parsed.target, parsed.body, "g1.1",
                           request_id=parsed.request_id))


@pytest.mark.parametrize("text", [
    '{"action":"a","id":NaN}',
    '{"action":"a","id":Infinity}',
    '{"action":"a","id":-Infinity}',
    '{"action":"a","id":1e400}',
    '{"action":"a","message_body":{"x":NaN}}',
    '{"action":"a","message_body":{"x":[1,{"y":-Infinity}]}}',
    '{"action":"a","message_body":{"x":-1e999}}',
])
def test_non_json_numbers_are_rejected(text: str) -> None:
    parsed = protocol.parse(text)
    assert isinstance(parsed, protocol.Rejected) and parsed.code is ErrorCode.BAD_JSON


def test_fields_the_server_ignores_may_hold_any_number() -> None:
    """Only what is forwarded (message_body, id) must be readable by every client."""
    parsed = protocol.parse('{"action":"a","target":"r","extra":1e400,"message_body":{"t":1.5}}')
    assert isinstance(parsed, protocol.Inbound) and parsed.body == b'{"t":1.5}'
    _accepted_frames_are_strict_json('{"action":"a","extra":1e400}')


@pytest.mark.parametrize("text", [
    '{"action":"a","message_body":{"x":"\\ud800"}}',
    '{"action":"a","message_body":{"\\udfff":1}}',
    '{"action":"a","id":"\\ud800"}',
    '{"action":"\\ud800"}',
    '{"action":"a","target":"r\\udc00"}',
])
def test_lone_surrogates_are_rejected_not_raised(text: str) -> None:
    parsed = protocol.parse(text)
    if isinstance(parsed, protocol.Inbound):
        parsed.action.encode()
        parsed.target.encode()
    _accepted_frames_are_strict_json(text)


@pytest.mark.parametrize("body, ok", [(b"", True), (b"{}", True), (b'{"a":[1,2]}', True),
                                      (b"[]", False), (b'{"x":NaN}', False), (b'{"x":1e400}', False),
                                      (b"{", False), (b'{"x":"\\ud800"}', True), (b"\xff", False)])
def test_watcher_bodies_must_be_json_objects_clients_can_read(body: bytes, ok: bool) -> None:
    assert protocol.is_json_object(body) is ok
