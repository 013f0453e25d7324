"""Client tokens (JWT): who a connection is, and who may join a private room.

One `Tokens` per process, built from the `Config` (`--jwt-secret` for HS256, or
`--jwt-public-key FILE` for RS256/ES256; optional `--jwt-audience`, `--jwt-issuer`).
The gateway checks connection tokens (at the upgrade and on `refresh-token`); the
processor checks private-room tokens. Both call the same two methods, so a token
means the same everywhere. Outcomes are values (`Identity` or a `TokenError`), never
exceptions, and never carry the token itself (tokens are secrets; logs must not
copy them).

Wall-clock time is passed in (`now`, seconds since the epoch), so tests decide it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .config import Config

LEEWAY = 0.0  # seconds of clock skew allowed on exp/nbf (kept explicit: 0)
MAX_TOKEN = 8192  # bytes: a longer "token" is refused unread


class TokenError(str, Enum):
    """Why a connection token was refused: the close reason sent with code 4003."""

    REQUIRED = "token-required"
    BAD = "bad-token"
    EXPIRED = "token-expired"


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified connection token: its `sub`, and when it expires (None: never)."""

    user: str
    expires: float | None


class TokenKeyError(ValueError):
    """The configured key cannot verify anything: said at start, not per token."""


def _public_key(path: str) -> tuple[Any, list[str]]:
    """The PEM public key of `--jwt-public-key` and the one algorithm its type allows
    (RS256 for RSA, ES256 for P-256), so a token can never pick another."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise TokenKeyError(f"cannot read --jwt-public-key {path!r}: {exc.strerror or exc}") from None
    except ValueError:
        raise TokenKeyError(f"--jwt-public-key {path!r} is not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, ["ES256"]
    raise TokenKeyError(f"--jwt-public-key {path!r}: only RSA and P-256 keys verify tokens (RS256, ES256)")


class Tokens:
    """Verifies JWTs against the configured key. `enabled` is False when no key is set."""

    def __init__(self, config: Config) -> None:
        self.audience = config.jwt_audience or None
        self.issuer = config.jwt_issuer or None
        self.key: Any
        if config.jwt_public_key:
            self.key, self.algorithms = _public_key(config.jwt_public_key)
        elif config.jwt_secret:
            self.key = config.jwt_secret
            self.algorithms = ["HS256"]
        else:
            self.key = None
            self.algorithms = []

    @property
    def enabled(self) -> bool:
        return self.key is not None

    def _claims(self, token: str, now: float, required: list[str]) -> dict[str, Any] | TokenError:
        if len(token) > MAX_TOKEN:
            return TokenError.BAD
        try:
            # exp/nbf are checked here against `now`, not by PyJWT's own clock.
            claims: dict[str, Any] = jwt.decode(
                token, self.key, algorithms=self.algorithms, audience=self.audience,
                issuer=self.issuer,
                options={"verify_exp": False, "verify_nbf": False, "require": required,
                         "verify_aud": self.audience is not None,
                         "verify_iss": self.issuer is not None})
        except jwt.PyJWTError:
            return TokenError.BAD
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if exp is not None and (not isinstance(exp, int | float) or isinstance(exp, bool)):
            return TokenError.BAD
        if nbf is not None and (not isinstance(nbf, int | float) or isinstance(nbf, bool)):
            return TokenError.BAD
        if nbf is not None and now + LEEWAY < nbf:
            return TokenError.BAD
        if exp is not None and now - LEEWAY >= exp:
            return TokenError.EXPIRED
        return claims

    def connection(self, token: str | None, now: float) -> Identity | TokenError:
        """A connection token: signature, exp, nbf, audience and issuer; `sub` is the user.

        A room pass (it has a `room` claim) is not one: `bad-token`. Signed by the same
        key for the same `sub`, it would otherwise open connections for as long as it
        lives, and a pass is handed out for one room, not to log in with."""
        if not token:
            return TokenError.REQUIRED
        claims = self._claims(token, now, ["sub"])
        if isinstance(claims, TokenError):
            return claims
        if "room" in claims:
            return TokenError.BAD
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub or len(sub) > 256:
            return TokenError.BAD
        exp = claims.get("exp")
        return Identity(sub, float(exp) if exp is not None else None)

    def room(self, token: object, user: str, room: str, now: float) -> bool:
        """A private-room token: signed by the same key, `sub` = the user, `room` = the
        room, and an `exp` (required: a room pass must not be valid for ever)."""
        if not self.enabled or not isinstance(token, str) or not token:
            return False
        claims = self._claims(token, now, ["sub", "room", "exp"])
        return (not isinstance(claims, TokenError) and claims["sub"] == user
                and claims["room"] == room)
