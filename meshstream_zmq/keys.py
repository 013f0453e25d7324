"""CURVE keys for the internal sockets: the files `meshstream keys DIR` writes, and the key ring.

Layout of DIR (mode 0700; every `.key_secret` file 0600):

    processor.key  processor.key_secret        the processor (CURVE server) pair
    gateways/gateway.key  gateway.key_secret    every gateway's pair
    watchers/<name>.key   <name>.key_secret     one pair per watcher, named as the watcher
    claims.json                                 {"<watcher>": ["mesh-global", "dice-*"], ...}

The files are pyzmq's `zmq.auth.create_certificates` format (ZPL text with z85
keys; `load_certificate` reads them; any language can read the `public-key =` /
`secret-key =` lines). A `.key_secret` file holds the whole pair; a `.key` file
only the public key. What each host needs:

- processor host: processor.key_secret, gateways/*.key, watchers/*.key, claims.json
- gateway host:   processor.key, gateways/gateway.key_secret (and watchers/api.key_secret: the HTTP API)
- watcher host:   processor.key, watchers/<name>.key_secret

`claims.json` says what each watcher key may claim in its hello: exact room names
and prefixes written `prefix*`. A hello naming another watcher, or claiming a
room or prefix its key is not given, is refused (`forbidden`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zmq.auth
from zmq.utils import z85

PROCESSOR = "processor"
GATEWAY = "gateway"
API = "api"  # the watcher key of every gateway's server API (its watcher api.<gateway ID>)
GATEWAYS_DIR = "gateways"
WATCHERS_DIR = "watchers"
CLAIMS_FILE = "claims.json"

# The bundled watchers and what each may claim (services/watchers.py runs them):
# the lobby claims mesh-global; the games watcher claims nothing in its hello (the
# lobby gives it each game room with create_room(watcher=...)); echo its prefix.
BUNDLED_CLAIMS: dict[str, tuple[str, ...]] = {
    "words-battle-lobby": ("mesh-global",),
    "words-battle-games": (),
    "echo": ("echo-*",),
    "webhooks": (),  # an observer: claims nothing (services/webhooks.py)
    API: (),  # the gateways' server API: commands only (docs/api.md)
}


class KeyFileError(Exception):
    """A key file or claim that is missing or malformed; the message says which and what to do."""


def fingerprint(public_z85: bytes | str) -> str:
    """A short, stable name for a public key in logs: 12 hex digits of its SHA-256.

    Never derived from a secret key; a public key is not secret, but the short form
    keeps log lines small and is what `meshstream keys` prints."""
    key = public_z85.encode() if isinstance(public_z85, str) else public_z85
    try:
        raw = z85.decode(key)
    except Exception:  # noqa: BLE001 - not a z85 key: fingerprint the text itself
        raw = key
    return hashlib.sha256(raw).hexdigest()[:12]


@dataclass(frozen=True)
class Claims:
    """What one watcher key may claim: exact rooms and prefixes (`dice-*` → prefix `dice-`)."""

    rooms: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> Claims:
        rooms: set[str] = set()
        prefixes: list[str] = []
        for item in items:
            item = item.strip()
            if not item:
                continue
            if item.endswith("*"):
                prefix = item[:-1]
                if not prefix or "*" in prefix:
                    raise KeyFileError(f"bad claim {item!r}: a prefix claim is `prefix*`")
                prefixes.append(prefix)
            elif "*" in item:
                raise KeyFileError(f"bad claim {item!r}: `*` may only end a prefix claim")
            else:
                rooms.add(item)
        return cls(frozenset(rooms), tuple(prefixes))

    def items(self) -> list[str]:
        return sorted(self.rooms) + [p + "*" for p in self.prefixes]

    def room(self, name: str) -> bool:
        return name in self.rooms or any(name.startswith(p) for p in self.prefixes)

    def prefix(self, prefix: str) -> bool:
        """A hello's prefix is allowed when it is within a prefix claim (`dice-` ⊆ `dice-*`)."""
        return any(prefix.startswith(p) for p in self.prefixes)

    def refused(self, rooms: Sequence[str], prefixes: Sequence[str]) -> list[str]:
        """The claims of a hello this key does not allow (empty: all allowed)."""
        return ([r for r in rooms if not self.room(r)]
                + [p + "*" for p in prefixes if not self.prefix(p)])


def parse_watcher_spec(spec: str) -> tuple[str, Claims]:
    """`NAME=CLAIM,CLAIM` (e.g. `dice=dice-*` or `monitor=`) → (name, claims)."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not valid_name(name):
        raise KeyFileError(f"bad --watcher {spec[:80]!r}: expected NAME=CLAIMS "
                           "(NAME: letters, digits, . _ -; CLAIMS: rooms and prefix*, comma-separated)")
    return name, Claims.parse(rest.split(","))


def valid_name(name: str) -> bool:
    return (0 < len(name) <= 64 and not name.startswith(".")
            and all(c.isascii() and (c.isalnum() or c in "._-") for c in name))


# ------------------------------------------------------------------ writing


def write_keys(keys_dir: str | os.PathLike[str], watchers: Mapping[str, Claims] | None = None,
               force: bool = False) -> tuple[list[Path], list[Path]]:
    """Write the processor's, the gateways' and each watcher's key pair, and claims.json.

    `watchers` defaults to the bundled ones (BUNDLED_CLAIMS); given ones are added
    to them (same name: replaced). An existing pair is kept unless `force`.
    Returns (written, kept) paths of the public `.key` files (and claims.json).
    """
    root = Path(keys_dir)
    claims = {name: Claims.parse(items) for name, items in BUNDLED_CLAIMS.items()}
    claims.update(watchers or {})
    for name in claims:
        if not valid_name(name):
            raise KeyFileError(f"bad watcher name {name[:80]!r}: letters, digits, . _ - only")
    _private_dir(root)
    _private_dir(root / GATEWAYS_DIR)
    _private_dir(root / WATCHERS_DIR)
    written: list[Path] = []
    kept: list[Path] = []
    pairs = [(root, PROCESSOR), (root / GATEWAYS_DIR, GATEWAY)]
    pairs += [(root / WATCHERS_DIR, name) for name in sorted(claims)]
    for where, name in pairs:
        public = where / f"{name}.key"
        secret = where / f"{name}.key_secret"
        if public.exists() and secret.exists() and not force:
            kept.append(public)
            continue
        old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
        try:
            for path in (public, secret):
                path.unlink(missing_ok=True)
            zmq.auth.create_certificates(where, name)
        finally:
            os.umask(old)
        secret.chmod(0o600)
        public.chmod(0o644)
        written.append(public)
    claims_path = root / CLAIMS_FILE
    existing = read_claims(root) if claims_path.exists() else {}
    merged = {**existing, **claims} if not force else claims
    if force or merged != existing or not claims_path.exists():
        text = json.dumps({n: c.items() for n, c in sorted(merged.items())}, indent=2) + "\n"
        tmp = claims_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(claims_path)
        written.append(claims_path)
    else:
        kept.append(claims_path)
    return written, kept


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise KeyFileError(f"{path} is not a directory of ours: refusing to write keys there")
    path.chmod(0o700)


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class KeyPair:
    public: bytes  # z85
    secret: bytes  # z85


def load_pair(path: Path) -> KeyPair:
    """A `.key_secret` file: its public and secret key."""
    if not path.exists():
        raise KeyFileError(f"no key file {path}: create it with `meshstream keys {path.parent}` "
                           "(see docs/operations.md, Keys)")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"{path} is mode {mode:04o}: a secret key file must be 0600 "
                           f"(chmod 600 {path})")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    if not secret:
        raise KeyFileError(f"{path} holds no secret key")
    return KeyPair(public, secret)


def load_public(path: Path) -> bytes:
    if not path.exists():
        raise KeyFileError(f"no public key file {path}: copy it from the host that ran "
                           "`meshstream keys`")
    try:
        public, _ = zmq.auth.load_certificate(path)
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    return public


def processor_pair(keys_dir: str) -> KeyPair:
    return load_pair(Path(keys_dir) / f"{PROCESSOR}.key_secret")


def processor_public(keys_dir: str) -> bytes:
    return load_public(Path(keys_dir) / f"{PROCESSOR}.key")


def gateway_pair(keys_dir: str) -> KeyPair:
    return load_pair(Path(keys_dir) / GATEWAYS_DIR / f"{GATEWAY}.key_secret")


def watcher_pair(keys_dir: str, name: str) -> KeyPair:
    if not valid_name(name):
        raise KeyFileError(f"watcher name {name[:80]!r} cannot name a key file")
    path = Path(keys_dir) / WATCHERS_DIR / f"{name}.key_secret"
    if not path.exists():
        raise KeyFileError(f"no key for watcher {name!r} ({path}): create it with "
                           f"`meshstream keys {keys_dir} --watcher {name}=CLAIMS`")
    return load_pair(path)


def read_claims(keys_dir: str | os.PathLike[str]) -> dict[str, Claims]:
    path = Path(keys_dir) / CLAIMS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise KeyFileError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(i, str) for i in v) for v in data.values()):
        raise KeyFileError(f"{path} must map watcher names to lists of claims")
    return {str(name): Claims.parse(items) for name, items in data.items()}


@dataclass(frozen=True)
class Peer:
    role: str  # "gateway" | "watcher" | "processor" (the other processor of a pair)
    name: str
    fingerprint: str

    @property
    def user_id(self) -> str:
        """The ZAP User-Id of its connections: what the processor reads from each message."""
        return f"{self.role}:{self.name}"


@dataclass
class KeyRing:
    """The public keys the processor admits, by role, and each watcher key's claims."""

    gateways: dict[bytes, Peer] = field(default_factory=dict)  # z85 public key -> peer
    watchers: dict[bytes, Peer] = field(default_factory=dict)
    processors: dict[bytes, Peer] = field(default_factory=dict)  # both of a pair share one key
    claims: dict[str, Claims] = field(default_factory=dict)  # watcher name -> its claims

    @classmethod
    def load(cls, keys_dir: str) -> KeyRing:
        root = Path(keys_dir)
        ring = cls(claims=read_claims(root))
        for role, sub, table in (("gateway", GATEWAYS_DIR, ring.gateways),
                                 ("watcher", WATCHERS_DIR, ring.watchers)):
            for path in sorted((root / sub).glob("*.key")):
                public = load_public(path)
                table[public] = Peer(role, path.stem, fingerprint(public))
        return ring

    def peer(self, public: bytes) -> Peer | None:
        return self.gateways.get(public) or self.watchers.get(public) or self.processors.get(public)

    def watcher_claims(self, name: str) -> Claims:
        return self.claims.get(name, Claims())

    def check_hello(self, user_id: str, name: str, rooms: Sequence[str],
                    prefixes: Sequence[str]) -> str:
        """Why the watcher whose connection authenticated as `user_id` may not say this
        hello ("" if it may): its key names one watcher, or instances of it (the key
        `K` says hello as `K` or `K.<instance>`: one key for many processes, such as the
        gateways' `api.<gateway ID>`), and claims no more than given."""
        role, _, key_name = user_id.partition(":")
        if role != "watcher" or not key_name:
            return "this connection has no watcher key"
        if name != key_name and name.partition(".")[0] != key_name:
            return f"the key of watcher {key_name!r} cannot say hello as another watcher"
        refused = self.watcher_claims(key_name).refused(rooms, prefixes)
        if refused:
            shown = ", ".join(c[:64] for c in refused[:5])
            return f"the key of watcher {key_name!r} may not claim {shown}"
        return ""
