"""The submitter's credentials encrypted at rest, with keys read from a file.

A job keeps its submitter's credential headers in Redis (``cred:{id}``) for as long as it
lives, so that a worker can send its requests under their budget. Whoever can read that Redis
(the gateway's bridge shares it; its RDB/AOF files; a backup) must not read live API keys
there, so the record is encrypted with Fernet (``cryptography``: AES-128-CBC + HMAC-SHA256,
authenticated, so a record altered in Redis is refused, not half-read).

The keys come by reference, from a file: one Fernet key a line, the first encrypts and every
one decrypts (MultiFernet). Rotation: put a new key first, keep the old ones until the jobs
they encrypted have finished (at most the longest completion window + 5 min), then drop them.

Each record names the batch or job it belongs to inside the encrypted part, so a record
copied from one batch's key to another's is refused as well.

There is no key-less mode: the service never stores raw credentials. Development entry
points (`tokenlimit up --jobs-port`, tests, bench) make a key file with :func:`dev_key_file`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

#: How to make a key (named in every error about a missing or malformed key file).
MAKE_KEY = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)
#: The code of the error a job fails with when its credentials cannot be decrypted, and what
#: its submitter reads (no path, no key: the operator's log line has the details).
UNREADABLE_CODE = "credentials_unreadable"
UNREADABLE_MESSAGE = (
    "this request was not sent: the credentials stored with it cannot be decrypted by the "
    "service (its credential key changed); submit it again"
)
#: The file name development entry points use for their generated key.
DEV_KEY_FILE = "jobs-credential.key"
#: A key file is a few keys; anything this large is not one (and is not read whole).
KEY_FILE_BYTES_MAX = 64 * 1024


class KeyFileError(ValueError):
    """A key file that cannot be used: the message names the path and the reason, never a
    key's bytes."""


class CredentialsUnreadable(Exception):
    """A stored credential record no key in the key file opens (or that belongs to another
    batch or job). The message says why, never what the record holds."""


class CredentialBox:
    """Seals and opens credential records; `source` (the key file) is named in logs."""

    def __init__(self, keys: Sequence[Fernet], source: str) -> None:
        assert keys, "a CredentialBox needs at least one key"
        self._fernet = MultiFernet(list(keys))
        self.source = source
        self.key_count = len(keys)

    def __repr__(self) -> str:  # never the keys
        return f"CredentialBox({self.source!r}, {self.key_count} keys)"

    def seal(self, record_id: str, headers: Mapping[str, str]) -> str:
        """The record for `record_id` (a batch or job id), encrypted with the first key."""
        plain = json.dumps({"id": record_id, "headers": dict(headers)}, separators=(",", ":"))
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def open(self, record_id: str, sealed: str) -> dict[str, str]:
        """The headers sealed for `record_id`; CredentialsUnreadable if no key opens the
        record or it was sealed for another id."""
        try:
            plain = self._fernet.decrypt(sealed.encode("ascii", errors="replace"))
        except InvalidToken:
            raise CredentialsUnreadable(
                f"no key in {self.source} decrypts them (the key that encrypted them was "
                "removed from the key file, the record was altered, or it was stored before "
                "credentials were encrypted)"
            ) from None
        record = json.loads(plain)
        if not isinstance(record, dict) or record.get("id") != record_id:
            raise CredentialsUnreadable("the stored record belongs to another batch or job")
        return cast("dict[str, str]", record["headers"])


def parse_keys(text: str, source: str) -> list[Fernet]:
    """The keys in a key file's text (blank lines and `#` comments skipped); KeyFileError
    names `source` and the line, never its content."""
    keys: list[Fernet] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(Fernet(line))
        except ValueError:  # binascii.Error is a ValueError too
            raise KeyFileError(
                f"{source}: line {number} is not a Fernet key (32 random bytes in URL-safe "
                f"base64, 44 characters); make one with: {MAKE_KEY}"
            ) from None
    if not keys:
        raise KeyFileError(f"{source}: holds no key; put one Fernet key a line ({MAKE_KEY})")
    return keys


def load_key_file(path: Path) -> CredentialBox:
    """The box for the keys in `path`; KeyFileError (path and reason) if it is missing,
    unreadable or malformed."""
    try:
        with path.open("rb") as found:
            data = found.read(KEY_FILE_BYTES_MAX + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > KEY_FILE_BYTES_MAX:
        raise KeyFileError(f"{path}: is larger than {KEY_FILE_BYTES_MAX} bytes: not a key file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: is not text (Fernet keys are ASCII)") from None
    return CredentialBox(parse_keys(text, str(path)), str(path))


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def dev_key_file(directory: Path) -> Path:
    """A key file in `directory` for development entry points: made (mode 0600) if missing,
    reused if present, so every service started with the same directory shares the key and
    jobs survive a restart of the service (not the loss of the directory)."""
    path = directory / DEV_KEY_FILE
    if path.exists():
        return path
    # Written whole under another name, then linked into place: a service started at the
    # same moment sees no file or a whole one, and the first link wins.
    draft = directory / f".{DEV_KEY_FILE}.{os.getpid()}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(new_key() + "\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path
