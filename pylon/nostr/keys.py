"""secp256k1 keys for Nostr: generation, hex/bech32 forms, BIP-340 signing, key files.

Signing and verification go through coincurve (libsecp256k1); parsed x-only public
keys are cached because parsing costs about a quarter of a verify.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from functools import lru_cache
from pathlib import Path

from coincurve import PrivateKey, PublicKeyXOnly
from coincurve._libsecp256k1 import ffi as _ffi, lib as _lib

from pylon.errors import StorageError
from pylon.nostr import bech32
from pylon.nostr.errors import InvalidKey


def _parse_hex32(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidKey(f"{what} must be a hex string, got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"{what} is not hex: {exc}") from None
    if len(raw) != 32:
        raise InvalidKey(f"{what} must be 32 bytes (64 hex chars), got {len(raw)} bytes")
    return raw


@lru_cache(maxsize=65536)
def xonly_pubkey(pubkey_hex: str) -> PublicKeyXOnly:
    """Parse (and cache) a 32-byte x-only public key given in hex."""
    raw = _parse_hex32(pubkey_hex, "public key")
    try:
        return PublicKeyXOnly(raw)
    except Exception as exc:  # coincurve raises ValueError for points not on the curve
        raise InvalidKey(f"public key is not a valid secp256k1 x coordinate: {exc}") from None


class PublicKeyCache:
    """Facade over the module-level pubkey cache, for callers that want stats or a reset."""

    @staticmethod
    def get(pubkey_hex: str) -> PublicKeyXOnly:
        return xonly_pubkey(pubkey_hex)

    @staticmethod
    def info() -> object:  # pragma: no cover - diagnostics only
        return xonly_pubkey.cache_info()


def verify_schnorr(pubkey_hex: str, sig_hex: str, msg32: bytes) -> bool:
    """BIP-340 verify; False for any malformed input rather than an exception."""
    try:
        key = xonly_pubkey(pubkey_hex)
        sig = bytes.fromhex(sig_hex)
    except (InvalidKey, ValueError, TypeError):
        return False
    if len(sig) != 64:
        return False
    try:
        return key.verify(sig, msg32)
    except Exception:
        return False


def normalize_pubkey(value: str) -> str:
    """Accept an npub or 64-char hex public key and return lowercase hex.

    The errors say which mistake it was (a typo in an npub, a secret key where a public one
    belongs, something else) and never echo a secret back."""
    if not isinstance(value, str):
        raise InvalidKey(f"public key must be a string, got {type(value).__name__}")
    value = value.strip()
    if value.lower().startswith("nsec1"):
        raise InvalidKey("that is a secret key (nsec…), not a public key",
                         hint="pass the npub (the public key) instead, and keep the nsec private")
    shown = value[:12] + ("…" if len(value) > 12 else "")
    if value.lower().startswith("npub1"):
        try:
            hrp, data = bech32.decode(value)
        except InvalidKey:
            raise InvalidKey(f"{shown} is not a valid npub: its checksum fails (a typo or a cut-off copy?)",
                             hint="copy the npub again (`pylon providers` lists them)") from None
        if hrp != "npub" or len(data) != 32:
            raise InvalidKey(f"{shown} is not a valid npub: it holds {len(data)} bytes, not 32")
        return data.hex()
    if len(value) != 64:
        raise InvalidKey(f"{shown!r} is not a public key: expected an npub1… or 64 hex characters")
    _parse_hex32(value, "public key")
    return value.lower()


def npub_of(pubkey: str) -> str:
    """A public key as a user reads it in messages: its npub. `pubkey` is hex (or already an
    npub); anything that is neither is returned as it is (a message never fails over a key)."""
    if isinstance(pubkey, str) and len(pubkey) == 64:
        return _npub_of_hex(pubkey)
    return pubkey


@lru_cache(maxsize=4096)
def _npub_of_hex(pubkey: str) -> str:
    """Remembered: the same few providers are named in every job's progress lines, and the
    pure-Python bech32 costs ~50 us a key."""
    try:
        return bech32.encode("npub", bytes.fromhex(pubkey))
    except ValueError:
        return pubkey


class Keys:
    """A Nostr identity: a secret key and its x-only public key.

    The secret never appears in repr() or str(); ask for `secret_hex` or `nsec` explicitly.
    """

    __slots__ = ("_sk", "public_key", "_keypair")

    def __init__(self, secret: bytes):
        if len(secret) != 32:
            raise InvalidKey("secret key must be 32 bytes")
        try:
            self._sk = PrivateKey(secret)
        except Exception as exc:
            raise InvalidKey(f"secret key out of range: {exc}") from None
        # x-only public key: drop the parity byte of the compressed form
        self.public_key: str = self._sk.public_key.format(compressed=True)[1:].hex()
        self._keypair = None  # secp256k1_keypair, built on the first sign() (see there)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def generate(cls) -> "Keys":
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_hex(cls, secret_hex: str) -> "Keys":
        if not isinstance(secret_hex, str):
            raise InvalidKey(f"secret key must be a hex string, got {type(secret_hex).__name__}")
        return cls(_parse_hex32(secret_hex.strip(), "secret key"))

    @classmethod
    def from_nsec(cls, nsec: str) -> "Keys":
        if not isinstance(nsec, str):
            raise InvalidKey(f"nsec must be a string, got {type(nsec).__name__}")
        hrp, data = bech32.decode(nsec.strip())
        if hrp != "nsec" or len(data) != 32:
            raise InvalidKey("not a valid nsec")
        return cls(data)

    @classmethod
    def parse(cls, value: str) -> "Keys":
        """Accept an nsec or a 64-char hex secret."""
        if not isinstance(value, str):
            raise InvalidKey(f"secret key must be a string, got {type(value).__name__}")
        value = value.strip()
        return cls.from_nsec(value) if value.startswith("nsec1") else cls.from_hex(value)

    # -- forms -------------------------------------------------------------------------
    @property
    def secret_hex(self) -> str:
        return self._sk.secret.hex()

    @property
    def secret_bytes(self) -> bytes:
        return self._sk.secret

    @property
    def nsec(self) -> str:
        return bech32.encode("nsec", self._sk.secret)

    @property
    def npub(self) -> str:
        return npub_of(self.public_key)

    def __repr__(self) -> str:
        return f"Keys(npub={self.npub})"

    __str__ = __repr__

    # -- crypto ------------------------------------------------------------------------
    def sign(self, msg32: bytes) -> str:
        """BIP-340 Schnorr signature (hex) over a 32-byte message (an event id)."""
        # coincurve's sign_schnorr rebuilds the keypair (a point multiplication) on every
        # call; a provider signs several events per job, so the keypair is built once here and
        # each call only signs and then verifies the signature (as coincurve does: a fault
        # during signing must never let a bad signature out).
        if len(msg32) != 32:
            raise ValueError("message must be 32 bytes")
        sk = self._sk
        keypair = self._keypair
        if keypair is None:
            keypair = _ffi.new("secp256k1_keypair *")
            if not _lib.secp256k1_keypair_create(sk.context.ctx, keypair, sk.secret):
                raise InvalidKey("secret key out of range")
            self._keypair = keypair
        sig = _ffi.new("unsigned char[64]")
        if not _lib.secp256k1_schnorrsig_sign32(sk.context.ctx, sig, msg32, keypair, secrets.token_bytes(32)):
            raise ValueError("signing failed")
        if not _lib.secp256k1_schnorrsig_verify(sk.context.ctx, sig, msg32, 32, sk.public_key_xonly.public_key):
            raise ValueError("signing produced an invalid signature")
        return bytes(_ffi.buffer(sig)[:]).hex()

    def ecdh_x(self, other_pubkey_hex: str) -> bytes:
        """Unhashed x coordinate of the shared point (what NIP-04 and NIP-44 use)."""
        from coincurve import PublicKey

        raw = _parse_hex32(other_pubkey_hex, "peer public key")
        try:
            point = PublicKey(b"\x02" + raw)
        except Exception as exc:
            raise InvalidKey(f"peer public key is not on the curve: {exc}") from None
        shared = point.multiply(self._sk.secret)
        return shared.format(compressed=True)[1:]

    # -- files ---------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the secret as hex to `path`, created with mode 0600 (never wider).
        StorageError when the file or its folder cannot be written."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, (self.secret_hex + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except OSError as exc:
            raise StorageError(f"cannot write the identity file {path}: {exc.strerror or exc}",
                               hint="check the folder's permissions, or set PYLON_HOME to a writable folder") from exc

    @classmethod
    def load(cls, path: Path) -> "Keys":
        """The identity in `path` (an nsec or 64 hex chars). StorageError when the file cannot be
        read or does not hold a key; the message never contains the file's content."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read the identity file {path}: {exc.strerror or exc}",
                               hint="check its permissions, or set PYLON_HOME to the folder that holds it") from exc
        try:
            return cls.parse(raw.decode("utf-8").strip())
        except (InvalidKey, UnicodeDecodeError) as exc:
            why = exc if isinstance(exc, InvalidKey) else "not text"
            raise StorageError(f"the identity file {path} does not hold a valid key ({why})",
                               hint="restore it from a backup, or make a new identity with "
                                    "`pylon keys new --force` (a new npub)") from None

    @classmethod
    def load_or_create(cls, path: Path) -> "Keys":
        """The identity at `path`, generated (mode 0600) on first use."""
        path = Path(path)
        if path.exists():
            return cls.load(path)
        # Several processes may start on a fresh PYLON_HOME at once (40 `pylon ask` in parallel):
        # exactly one identity must win and every process must use that one. Each writes its
        # own temporary file and links it into place (link fails if the file exists); a loser
        # reads the winner's key.
        keys = cls.generate()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        keys.save(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return cls.load(path)
        except OSError as exc:
            raise StorageError(f"cannot write the identity file {path}: {exc.strerror or exc}",
                               hint="check the folder's permissions, or set PYLON_HOME to a writable folder") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return keys
