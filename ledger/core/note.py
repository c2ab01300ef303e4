"""C2SP signed notes with Ed25519 keys (https://c2sp.org/signed-note).

A note is UTF-8 text: a body of newline-terminated lines, a blank line, then one line per
signature ``— <key name> <base64(key id ‖ signature)>``. The key id of an Ed25519 key is the
first 4 bytes of SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key). Keys are written as the Go
``golang.org/x/mod/sumdb/note`` tools write them:

  verifier key  ``<name>+<hex key id>+<base64(0x01 ‖ public key)>``
  signer key    ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ 32-byte seed)>``
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.core.failures import NoteError, SignatureError

__all__ = [
    "ALG_ED25519",
    "Signature",
    "Signer",
    "VerifiedNote",
    "Verifier",
    "key_id",
    "open_note",
    "sign_note",
]

ALG_ED25519 = 0x01
_DASH = "\u2014 "
_PRIVATE_PREFIX = "PRIVATE+KEY+"
# Go's note package refuses more; a note with thousands of signatures is an attack.
_SIGNATURES_MAX = 100
_NOTE_BYTES_MAX = 1 << 20


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name) or not name.isprintable():
        raise NoteError("key_name", repr(name), "a key name is non-empty, without spaces or '+'")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError("base64", what, f"not standard base64: {exc}") from exc


class Verifier:
    """A public key with its name; checks signatures made by the matching Signer."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        _check_name(name)
        if len(public_key) != 32:
            raise NoteError("public_key", name, f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
        self.name = name
        self.public_key = public_key
        self.key_id = key_id(name, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def parse(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)  # base64 may contain "+"
        if len(parts) != 3:
            raise NoteError("verifier_key", text.strip()[:80], "expected <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        raw = _b64decode(b64, f"verifier key {name}")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("verifier_key", name, "the key is not an Ed25519 key (0x01 followed by 32 bytes)")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != hex_id.lower() or len(hex_id) != 8:
            raise NoteError("verifier_key", name, f"key id {hex_id} does not match the key ({verifier.key_id.hex()})")
        return verifier

    def encode(self) -> str:
        raw = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Signer:
    __slots__ = ("_key", "name", "verifier")

    def __init__(self, name: str, seed: bytes) -> None:
        _check_name(name)
        if len(seed) != 32:
            raise NoteError("signer_key", name, f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        self.name = name
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = Verifier(name, public)

    @classmethod
    def generate(cls, name: str) -> Signer:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(name, seed)

    @classmethod
    def parse(cls, text: str) -> Signer:
        text = text.strip()
        if not text.startswith(_PRIVATE_PREFIX):
            raise NoteError("signer_key", "key file", f"a signer key starts with {_PRIVATE_PREFIX}")
        parts = text[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise NoteError("signer_key", "key file", "expected PRIVATE+KEY+<name>+<hex key id>+<base64 seed>")
        name, hex_id, b64 = parts
        raw = _b64decode(b64, "signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("signer_key", name, "the key is not an Ed25519 key (0x01 followed by 32 bytes)")
        signer = cls(name, raw[1:])
        if signer.key_id.hex() != hex_id.lower():
            raise NoteError("signer_key", name, f"key id {hex_id} does not match the key")
        return signer

    @property
    def key_id(self) -> bytes:
        return self.verifier.key_id

    def encode(self) -> str:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        raw = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id.hex()}+{raw}"

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


class Signature(msgspec.Struct, frozen=True):
    name: str
    key_id: bytes
    signature: bytes


class VerifiedNote(msgspec.Struct, frozen=True):
    body: str  # newline-terminated
    verified_by: list[Verifier]
    signatures: list[Signature]


def _check_text(body: str, what: str) -> None:
    if not body.endswith("\n"):
        raise NoteError("note_format", what, "the note body must end with a newline")
    for c in body:
        if (c < " " and c != "\n") or c == "\x7f":
            raise NoteError("note_format", what, f"control character {c!r} in the note")


def sign_note(body: str, signers: Iterable[Signer]) -> str:
    _check_text(body, "note body")
    message = body.encode()
    lines = []
    for signer in signers:
        blob = base64.b64encode(signer.key_id + signer.sign(message)).decode()
        lines.append(f"{_DASH}{signer.name} {blob}\n")
    if not lines:
        raise NoteError("note_format", "note", "a note needs at least one signature")
    return body + "\n" + "".join(lines)


def open_note(text: str, verifiers: Iterable[Verifier], *, where: str = "note") -> VerifiedNote:
    """Parse a signed note and check it: at least one signature by a trusted key, and every
    signature by a trusted key valid. Signatures by unknown keys are kept but not trusted."""
    if len(text) > _NOTE_BYTES_MAX:
        raise NoteError("note_format", where, "note is larger than 1 MiB")
    split = text.rfind("\n\n")
    if split < 0 or not text.endswith("\n"):
        raise NoteError("note_format", where, "no blank line separating the body from its signatures")
    body, sig_text = text[: split + 1], text[split + 2 :]
    _check_text(body, where)
    signatures: list[Signature] = []
    for line in sig_text.split("\n")[:-1]:
        if not line.startswith(_DASH):
            raise NoteError("note_format", where, f"signature line does not start with an em dash: {line[:60]!r}")
        name, _, blob = line[len(_DASH) :].partition(" ")
        _check_name(name)
        raw = _b64decode(blob, f"{where}, signature by {name}")
        if len(raw) < 5:
            raise NoteError("note_format", where, f"signature by {name} is too short")
        signatures.append(Signature(name=name, key_id=raw[:4], signature=raw[4:]))
    if not signatures:
        raise NoteError("note_format", where, "the note carries no signature")
    if len(signatures) > _SIGNATURES_MAX:
        raise NoteError("note_format", where, f"more than {_SIGNATURES_MAX} signatures")
    known = {(v.name, v.key_id): v for v in verifiers}
    message = body.encode()
    verified: list[Verifier] = []
    for sig in signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(message, sig.signature):
            raise SignatureError(
                "signature", where, f"the signature by {sig.name} (key {sig.key_id.hex()}) does not verify"
            )
        verified.append(verifier)
    if not verified:
        by = ", ".join(f"{s.name} (key {s.key_id.hex()})" for s in signatures)
        trusted = ", ".join(f"{v.name} (key {v.key_id.hex()})" for v in known.values()) or "none"
        raise SignatureError("untrusted_key", where, f"signed by {by}; none of them is a trusted key ({trusted})")
    return VerifiedNote(body=body, verified_by=verified, signatures=signatures)
