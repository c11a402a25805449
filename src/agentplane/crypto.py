"""Secrets at rest: AES-256-GCM under one key from the environment or a key file.

The ciphertext is bound to where it is stored (associated data, e.g. the row's id),
so a value copied into another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentplane.config import Settings
from agentplane.errors import ConfigError

VERSION = b"\x01"
KEY_FILE = "encryption.key"


def _decode(text: str, source: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{source} must be 32 bytes, base64url-encoded")
    return key


def _key_file(home: Path) -> bytes:
    path = home / "keys" / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        # O_EXCL: of two processes starting at once, one writes and both read the same key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _decode(path.read_text(), str(path))
    with os.fdopen(fd, "w") as f:
        f.write(base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode())
    return _decode(path.read_text(), str(path))


@lru_cache(maxsize=8)
def _cipher(env_key: str | None, home: Path) -> AESGCM:
    if env_key:
        return AESGCM(_decode(env_key, "AGENTPLANE_ENCRYPTION_KEY"))
    return AESGCM(_key_file(home))


def cipher(settings: Settings) -> AESGCM:
    key = settings.encryption_key.get_secret_value() if settings.encryption_key else None
    return _cipher(key, settings.home)


def encrypt(settings: Settings, plaintext: str, context: str) -> bytes:
    nonce = os.urandom(12)
    return VERSION + nonce + cipher(settings).encrypt(nonce, plaintext.encode(), context.encode())


def decrypt(settings: Settings, blob: bytes, context: str) -> str:
    if not blob or blob[:1] != VERSION:
        raise ConfigError("a stored secret has an unknown format")
    try:
        return cipher(settings).decrypt(blob[1:13], blob[13:], context.encode()).decode()
    except InvalidTag:
        raise ConfigError(
            "a stored secret cannot be decrypted: the encryption key changed "
            "(AGENTPLANE_ENCRYPTION_KEY or <home>/keys/encryption.key)"
        ) from None
