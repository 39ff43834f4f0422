"""RESP2 encoding and parsing: small pure functions shared by the bridge, tests and tools.

Why our own: the bridge must forward Redis replies to the filter *byte for byte* (the filter
parses RESP itself), must validate untrusted command pipelines with hard bounds before any
byte reaches Redis, and must do both fast. redis-py's parser decodes replies into Python
objects and throws the framing away, and it has no notion of bounds for *incoming commands*.

What is here:

* :func:`encode_command` / :func:`encode_commands` -- build RESP arrays of bulk strings
  (the only form of command the bridge accepts; inline commands are refused).
* :func:`split_commands` -- strictly parse a request body that holds a pipeline of such arrays,
  with bounds (commands, arguments per command, bytes per argument). Anything that is not
  exactly ``*N\\r\\n`` followed by N ``$LEN\\r\\n<LEN bytes>\\r\\n`` raises :class:`ProtocolError`.
  A body accepted here is already in canonical form, so it can be forwarded unchanged.
* :class:`ReplyParser` -- incremental: :meth:`ReplyParser.feed` takes whatever bytes arrived and
  returns the replies completed so far (simple string, error, integer, bulk incl. null, arrays
  incl. nested and null). Each :class:`Reply` keeps its exact wire bytes in ``raw``.
* :func:`parse_replies` -- the one-shot form for a buffer that must hold whole replies.

RESP3 types are not understood on purpose: the bridge never sends ``HELLO 3``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CRLF = b"\r\n"

#: Bounds for commands accepted from the filter (see tokenlimit.bridge.server).
MAX_ARGS = 1024
MAX_ARG_BYTES = 512 * 1024
#: Bounds for replies read from Redis: Redis' own proto-max-bulk-len, and a nesting limit that
#: keeps the recursive parser far from Python's recursion limit.
MAX_REPLY_BULK = 512 * 1024 * 1024
MAX_REPLY_DEPTH = 64

_MAX_INT_DIGITS = 20  # len(str(-2**63)) is 20
_REPLY_TYPES = frozenset(b"+-:$*")
_LINE_TYPES = frozenset(b"+-")

Arg = bytes | bytearray | memoryview | str | int
ReplyValue = bytes | int | list["Reply"] | None


class ProtocolError(ValueError):
    """Bytes that are not valid RESP2 of the expected shape, or that exceed a bound."""


class ReplyError(Exception):
    """A Redis error reply (``-ERR ...``) as a Python value; returned, never raised, by
    :meth:`Reply.to_python`."""

    @property
    def code(self) -> str:
        """The error prefix Redis uses as an error class: ``ERR``, ``NOSCRIPT``, ``WRONGPASS``..."""
        return str(self).split(" ", 1)[0]


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete RESP2 reply.

    ``kind`` is the type byte as a one-character str (``+ - : $ *``); ``value`` is bytes for
    simple strings, errors and bulk strings, int for integers, a list of :class:`Reply` for
    arrays and ``None`` for a null bulk (``$-1``) or null array (``*-1``); ``raw`` is the exact
    wire encoding, which is what the bridge forwards.
    """

    kind: str
    value: ReplyValue
    raw: bytes

    @property
    def is_error(self) -> bool:
        return self.kind == "-"

    def to_python(self) -> object:
        """Plain Python value: simple string -> str, bulk -> bytes, integer -> int,
        null -> None, array -> list, error -> :class:`ReplyError` (an instance, not raised)."""
        kind, value = self.kind, self.value
        if kind == "+":
            assert isinstance(value, bytes)
            return value.decode("utf-8", "replace")
        if kind == "-":
            assert isinstance(value, bytes)
            return ReplyError(value.decode("utf-8", "replace"))
        if kind == "*" and value is not None:
            assert isinstance(value, list)
            return [item.to_python() for item in value]
        return value


# --------------------------------------------------------------------------- encoding


def _arg_bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, bool):  # a bool is an int, but True -> b"1" is almost always a bug
        raise TypeError("RESP argument must be bytes, str or int, not bool")
    if isinstance(arg, int):
        return str(arg).encode("ascii")
    if isinstance(arg, bytearray | memoryview):
        return bytes(arg)
    raise TypeError(f"RESP argument must be bytes, str or int, not {type(arg).__name__}")


def encode_command(*args: Arg) -> bytes:
    """``encode_command("EVALSHA", sha, 1, "k")`` -> ``*4\\r\\n$7\\r\\nEVALSHA\\r\\n...``."""
    if not args:
        raise ValueError("a command needs at least one argument")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _arg_bytes(arg)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(CRLF)
    return b"".join(parts)


def encode_commands(commands: Iterable[Sequence[Arg]]) -> bytes:
    """A pipeline: the encoded commands concatenated in order."""
    return b"".join(encode_command(*cmd) for cmd in commands)


# --------------------------------------------------------------------------- commands


def _header_int(body: bytes, pos: int, prefix: int, what: str) -> tuple[int, int]:
    """Parses ``<prefix><digits>\\r\\n`` at ``pos``; returns (value, position after CRLF)."""
    if pos >= len(body):
        raise ProtocolError(f"truncated: expected {what} at byte {pos}")
    if body[pos] != prefix:
        raise ProtocolError(
            f"expected {chr(prefix)!r} ({what}) at byte {pos}, got {body[pos : pos + 1]!r}"
        )
    eol = body.find(CRLF, pos + 1, pos + 2 + _MAX_INT_DIGITS)
    if eol < 0:
        if len(body) - pos <= 1 + _MAX_INT_DIGITS:
            raise ProtocolError(f"truncated: {what} at byte {pos} has no CRLF")
        raise ProtocolError(f"{what} at byte {pos} is not a short decimal number")
    digits = body[pos + 1 : eol]
    if not digits.isdigit() or (len(digits) > 1 and digits[0] == 0x30):
        raise ProtocolError(f"{what} at byte {pos} is not a non-negative decimal: {digits!r}")
    return int(digits), eol + 2


def split_commands(
    body: bytes,
    *,
    max_commands: int | None = None,
    max_args: int = MAX_ARGS,
    max_arg_bytes: int = MAX_ARG_BYTES,
) -> list[list[bytes]]:
    """Parses a pipeline of RESP command arrays; raises :class:`ProtocolError` on anything else.

    Strict: every command is a non-empty array (``*N``, 1 <= N <= ``max_args``) of bulk strings
    (``$LEN``, 0 <= LEN <= ``max_arg_bytes``), numbers are plain decimals without sign or leading
    zeros, every CRLF is where it must be, the body holds at least one command and nothing after
    the last. Inline commands, null bulks and nested arrays are refused.
    """
    body = bytes(body)
    size = len(body)
    if size == 0:
        raise ProtocolError("empty body: expected at least one RESP command array")
    commands: list[list[bytes]] = []
    pos = 0
    while pos < size:
        if max_commands is not None and len(commands) >= max_commands:
            raise ProtocolError(f"too many commands in one pipeline (at most {max_commands})")
        count, pos = _header_int(body, pos, 0x2A, "command array '*N'")
        if count == 0:
            raise ProtocolError("empty command array '*0'")
        if count > max_args:
            raise ProtocolError(f"command has {count} arguments (at most {max_args})")
        args: list[bytes] = []
        for _ in range(count):
            length, pos = _header_int(body, pos, 0x24, "bulk string '$LEN'")
            if length > max_arg_bytes:
                raise ProtocolError(f"argument of {length} bytes (at most {max_arg_bytes})")
            end = pos + length
            if end + 2 > size:
                raise ProtocolError(f"truncated: bulk string of {length} bytes at byte {pos}")
            if body[end : end + 2] != CRLF:
                raise ProtocolError(f"bulk string at byte {pos} is not followed by CRLF")
            args.append(body[pos:end])
            pos = end + 2
        commands.append(args)
    return commands


# --------------------------------------------------------------------------- replies


class _Incomplete(Exception):
    """More bytes are needed; ``need`` is the smallest buffer end that could complete it."""

    def __init__(self, need: int) -> None:
        self.need = need


def _reply_int(buf: bytes | bytearray, start: int, eol: int) -> int:
    digits = bytes(buf[start:eol])
    body = digits[1:] if digits[:1] == b"-" else digits
    if not body.isdigit() or len(digits) > _MAX_INT_DIGITS:
        raise ProtocolError(f"invalid integer in reply: {digits!r}")
    return int(digits)


class ReplyParser:
    """Incremental RESP2 reply parser.

    ``feed(data)`` appends bytes and returns the list of replies completed by them (possibly
    empty); a partial reply stays buffered until the rest arrives. A :class:`ProtocolError`
    leaves the parser unusable: the stream has lost its framing, so the connection must go.
    """

    __slots__ = ("_buf", "_max_bulk", "_max_depth", "_need")

    def __init__(self, *, max_bulk: int = MAX_REPLY_BULK, max_depth: int = MAX_REPLY_DEPTH) -> None:
        self._buf = bytearray()
        self._need = 0  # do not retry parsing before the buffer holds this many bytes
        self._max_bulk = max_bulk
        self._max_depth = max_depth

    @property
    def buffered(self) -> int:
        """Bytes held for a reply not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Reply]:
        buf = self._buf
        buf += data
        size = len(buf)
        if size < self._need:
            return []
        out: list[Reply] = []
        pos = 0
        try:
            while pos < size:
                reply, pos = self._parse(buf, pos, 0)
                out.append(reply)
            self._need = 0
        except _Incomplete as inc:
            self._need = inc.need - pos
        if pos:
            del buf[:pos]
        return out

    def _parse(self, buf: bytearray, pos: int, depth: int) -> tuple[Reply, int]:
        kind = buf[pos]
        if kind not in _REPLY_TYPES:
            raise ProtocolError(f"unknown RESP2 reply type byte {bytes([kind])!r}")
        eol = buf.find(CRLF, pos)
        if eol < 0:
            if kind not in _LINE_TYPES and len(buf) - pos > 2 + _MAX_INT_DIGITS:
                raise ProtocolError("reply length or integer is not a short decimal number")
            raise _Incomplete(len(buf) + 1)
        if kind == 0x24:  # $ bulk
            length = _reply_int(buf, pos + 1, eol)
            if length < 0:
                if length != -1:
                    raise ProtocolError(f"invalid bulk length {length}")
                end = eol + 2
                return Reply("$", None, bytes(buf[pos:end])), end
            if length > self._max_bulk:
                raise ProtocolError(f"bulk reply of {length} bytes (at most {self._max_bulk})")
            start = eol + 2
            end = start + length + 2
            if end > len(buf):
                raise _Incomplete(end)
            if buf[end - 2 : end] != CRLF:
                raise ProtocolError("bulk reply not terminated by CRLF")
            return Reply("$", bytes(buf[start : end - 2]), bytes(buf[pos:end])), end
        if kind == 0x3A:  # : integer
            end = eol + 2
            return Reply(":", _reply_int(buf, pos + 1, eol), bytes(buf[pos:end])), end
        if kind == 0x2B or kind == 0x2D:  # + simple string, - error
            end = eol + 2
            line = bytes(buf[pos + 1 : eol])
            if b"\r" in line or b"\n" in line:
                raise ProtocolError("CR or LF inside a simple string or error reply")
            return Reply(chr(kind), line, bytes(buf[pos:end])), end
        # * array (the type byte was checked above)
        count = _reply_int(buf, pos + 1, eol)
        if count < 0:
            if count != -1:
                raise ProtocolError(f"invalid array length {count}")
            end = eol + 2
            return Reply("*", None, bytes(buf[pos:end])), end
        if depth >= self._max_depth:
            raise ProtocolError(f"reply nested deeper than {self._max_depth} arrays")
        cur = eol + 2
        items: list[Reply] = []
        for _ in range(count):
            if cur >= len(buf):
                raise _Incomplete(cur + 1)
            item, cur = self._parse(buf, cur, depth + 1)
            items.append(item)
        return Reply("*", items, bytes(buf[pos:cur])), cur


def parse_replies(data: bytes | bytearray | memoryview) -> list[Reply]:
    """Parses a buffer holding only complete replies; raises :class:`ProtocolError` if it ends
    inside a reply."""
    parser = ReplyParser()
    replies = parser.feed(data)
    if parser.buffered:
        raise ProtocolError(f"truncated reply: {parser.buffered} bytes left over")
    return replies
