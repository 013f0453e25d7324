"""Client tokens: every outcome of a connection token and a private-room token, with
keys made here (HS256 secret, RS256 and ES256 key pairs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshstream_zmq.auth import Identity, TokenError, TokenKeyError, Tokens
from meshstream_zmq.config import Config

NOW = 1_800_000_000.0
SECRET = "s" * 32


def hs(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def test_no_key_means_tokens_are_off() -> None:
    assert not Tokens(Config()).enabled
    assert Tokens(Config()).room(hs({"sub": "u", "room": "private-r", "exp": NOW + 60}), "u",
                                 "private-r", NOW) is False


@pytest.mark.parametrize(("token", "outcome"), [
    (None, TokenError.REQUIRED),
    ("", TokenError.REQUIRED),
    ("not.a.jwt", TokenError.BAD),
    (hs({"sub": "ann"}, key="another-secret-another-secret-xx"), TokenError.BAD),
    (hs({"exp": NOW + 60}), TokenError.BAD),  # no sub
    (hs({"sub": 7}), TokenError.BAD),
    (hs({"sub": "ann", "exp": NOW - 1}), TokenError.EXPIRED),
    (hs({"sub": "ann", "exp": NOW}), TokenError.EXPIRED),
    (hs({"sub": "ann", "nbf": NOW + 30}), TokenError.BAD),
    (hs({"sub": "ann", "exp": "tomorrow"}), TokenError.BAD),
    ("x" * 10_000, TokenError.BAD),
    (hs({"sub": "ann", "exp": NOW + 60}), Identity("ann", NOW + 60)),
    (hs({"sub": "ann"}), Identity("ann", None)),
    # a room pass is not a connection token, valid as it is for its room
    (hs({"sub": "ann", "room": "private-r", "exp": NOW + 60}), TokenError.BAD),
    (hs({"sub": "ann", "room": None}), TokenError.BAD),
])
def test_connection_tokens(token: str | None, outcome: object) -> None:
    assert Tokens(Config(jwt_secret=SECRET)).connection(token, NOW) == outcome


def test_the_none_algorithm_is_refused() -> None:
    token = jwt.encode({"sub": "ann"}, None, algorithm="none")  # type: ignore[arg-type]
    assert Tokens(Config(jwt_secret=SECRET)).connection(token, NOW) is TokenError.BAD


def test_audience_and_issuer_when_configured() -> None:
    tokens = Tokens(Config(jwt_secret=SECRET, jwt_audience="game", jwt_issuer="auth.example"))
    good = {"sub": "ann", "aud": "game", "iss": "auth.example"}
    assert tokens.connection(hs(good), NOW) == Identity("ann", None)
    assert tokens.connection(hs({**good, "aud": "other"}), NOW) is TokenError.BAD
    assert tokens.connection(hs({**good, "iss": "elsewhere"}), NOW) is TokenError.BAD
    assert tokens.connection(hs({"sub": "ann"}), NOW) is TokenError.BAD


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_public_key_tokens(kind: str, tmp_path: Path) -> None:
    private: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
                    else ec.generate_private_key(ec.SECP256R1()))
    pem = tmp_path / "public.pem"
    pem.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    tokens = Tokens(Config(jwt_public_key=str(pem)))
    alg = "RS256" if kind == "rsa" else "ES256"
    assert tokens.connection(jwt.encode({"sub": "ann"}, private, algorithm=alg), NOW) == Identity("ann", None)
    # HS256 signed with the public key's text (the classic confusion attack) is refused
    signing_input = b".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
                              for part in ({"alg": "HS256", "typ": "JWT"}, {"sub": "ann"}))
    mac = hmac.new(pem.read_bytes(), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    assert tokens.connection(forged, NOW) is TokenError.BAD


def test_room_tokens_name_the_user_and_the_room_and_expire() -> None:
    tokens = Tokens(Config(jwt_secret=SECRET))
    ok = {"sub": "ann", "room": "private-r", "exp": NOW + 60}
    assert tokens.room(hs(ok), "ann", "private-r", NOW)
    assert not tokens.room(hs(ok), "bob", "private-r", NOW)
    assert not tokens.room(hs(ok), "ann", "private-s", NOW)
    assert not tokens.room(hs({**ok, "exp": NOW - 1}), "ann", "private-r", NOW)
    assert not tokens.room(hs({"sub": "ann", "room": "private-r"}), "ann", "private-r", NOW)  # no exp
    assert not tokens.room(12, "ann", "private-r", NOW)


@pytest.mark.parametrize("content", [None, b"not a key", "p384"])
def test_an_unusable_public_key_is_refused_at_start(content: bytes | str | None, tmp_path: Path) -> None:
    pem = tmp_path / "public.pem"
    if content == "p384":  # a valid key of a type that verifies no algorithm we accept
        key = ec.generate_private_key(ec.SECP384R1()).public_key()
        pem.write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    elif isinstance(content, bytes):
        pem.write_bytes(content)
    with pytest.raises(TokenKeyError, match=str(pem)):
        Tokens(Config(jwt_public_key=str(pem)))
