"""The fast paths agree with the strict parsers they stand in for: scan_commands with
split_commands on every body (valid, hostile, truncated, mutated), ReplyFramer with ReplyParser
on every reply stream, fed whole or byte by byte."""

from __future__ import annotations

import random

import pytest
from tokenlimit.bridge.frame import ReplyFramer
from tokenlimit.bridge.resp import (
    MAX_ARG_BYTES,
    MAX_ARGS,
    ProtocolError,
    ReplyParser,
    encode_command,
    encode_commands,
    split_commands,
)
from tokenlimit.bridge.scan import HEAD_ARGS, scan_commands

SHA = b"0123456789abcdef0123456789abcdef01234567"
ADMISSION: list[str | int] = [1, 0, 0, 60000, 1000000, 1, ""]
ADMIT_MANY = encode_command(
    "EVALSHA", SHA, 16, *[f"{{tl}}:r:{i:040d}" for i in range(16)], "admit_many", 0, 0, 8,
    *ADMISSION * 8,
)  # fmt: skip

VALID = [
    encode_command("PING"),
    encode_command("TIME"),
    encode_commands([("PING",), ("TIME",), ("PING",)]),
    encode_command("EVAL", b"return 1", 0),
    encode_command("SCRIPT", "LOAD", b"x" * 300),
    encode_command("EVALSHA", SHA, 1, "k", "a\r\nb", "", b"\n" * 200, "x" * 99, "y" * 100),
    ADMIT_MANY,
    ADMIT_MANY + encode_command("PING") + ADMIT_MANY,
    encode_command(*(["x"] * MAX_ARGS)),
    encode_command("EVAL", b"z" * MAX_ARG_BYTES),
]

HOSTILE = [
    b"",
    b"PING\r\n",
    b"*0\r\n",
    b"*01\r\n$4\r\nPING\r\n",
    b"*1\r\n$04\r\nPING\r\n",
    b"*1\r\n$+4\r\nPING\r\n",
    b"*1\r\n$-1\r\n",
    b"*1\r\n*1\r\n$4\r\nPING\r\n",
    b"*1\r\n:1\r\n",
    b"*1\r\n$4\r\nPING\n",
    b"*1\r\n$4\r\nPINGxx",
    b"*2\r\n$4\r\nPING\r\n",
    b"*1\r\n$4\r\nPING\r\n$4\r\nPING\r\n",
    b"*1\r\n$4\r\nPING\r\njunk",
    b"*4\r\n$4\r\nEVAL\r\n$1\r\nx\r\n$1\r\n0\r\n$2\r\nab\r\n$1\r\nc\r\n",
    b"*3\r\n$1\r\na\r\n$1\r\nb\r\n" + b"$1\r\nc\r\n" * 3,
    encode_command(*(["x"] * (MAX_ARGS + 1))),
    encode_command("EVAL", b"z" * (MAX_ARG_BYTES + 1)),
    encode_commands([("PING",)] * 65),
    ADMIT_MANY[:-1],
    ADMIT_MANY[:-3],
    ADMIT_MANY + b"\r\n",
]


def _split(body: bytes, **bounds: int | None) -> list[list[bytes]] | str:
    try:
        return [c[:HEAD_ARGS] for c in split_commands(body, **bounds)]  # type: ignore[arg-type]
    except ProtocolError as e:
        return f"ProtocolError: {e}"


def _scan(body: bytes, **bounds: int | None) -> list[list[bytes]] | str:
    try:
        return scan_commands(body, **bounds)  # type: ignore[arg-type]
    except ProtocolError as e:
        return f"ProtocolError: {e}"


@pytest.mark.parametrize("body", VALID + HOSTILE)
def test_scan_answers_as_split_commands(body: bytes) -> None:
    assert _scan(body, max_commands=64) == _split(body, max_commands=64)


def test_scan_keeps_every_bound_with_smaller_limits() -> None:
    for body in VALID:
        for bounds in ({"max_args": 3}, {"max_arg_bytes": 40}, {"max_arg_bytes": 2}):
            assert _scan(body, **bounds) == _split(body, **bounds), (body[:60], bounds)


def test_scan_agrees_on_random_mutations() -> None:
    rng = random.Random(17)
    alphabet = b"*$:+-0123456789\r\nPINGx"
    for _ in range(4000):
        body = bytearray(rng.choice(VALID[:8]))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(body))
            action = rng.random()
            if action < 0.4:
                body[at] = rng.choice(alphabet)
            elif action < 0.7:
                del body[at]
            else:
                body[at:at] = bytes([rng.choice(alphabet)])
        data = bytes(body)
        assert _scan(data, max_commands=64) == _split(data, max_commands=64), data[:80]


REPLIES = [
    b"+PONG\r\n",
    b"-ERR wrong\r\n",
    b":42\r\n",
    b":-7\r\n",
    b"$5\r\nhello\r\n",
    b"$0\r\n\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"$6\r\na\r\nb\r\n\r\n",
    b"*40\r\n" + b":123456\r\n" * 40,
    b"*3\r\n:1\r\n*2\r\n+ok\r\n$3\r\nabc\r\n*0\r\n",
    b"*2\r\n*1\r\n:1\r\n:2\r\n",
    b"*1\r\n" * 64 + b":1\r\n",
    b"$" + b"%d" % 100000 + b"\r\n" + b"y" * 100000 + b"\r\n",
]
BAD_REPLIES = [
    b"!oops\r\n",
    b":12x\r\n",
    b"+a\rb\r\n",
    b"$3\r\nabcd\r\n",
    b"*1\r\n" * 65 + b":1\r\n",
    b"*1\r\n" * 64 + b"*0\r\n",
    b"$-2\r\n",
    b":" + b"9" * 30 + b"\r\n",
    b":" + b"9" * 30,
    b"$0012\r\n",
]


def _parser_raws(stream: bytes, chunk: int) -> list[bytes] | str:
    parser, out = ReplyParser(), []
    try:
        for i in range(0, len(stream), chunk):
            out += [r.raw for r in parser.feed(stream[i : i + chunk])]
    except ProtocolError as e:
        return f"ProtocolError: {e}"
    return out


def _framer_raws(stream: bytes, chunk: int) -> list[bytes] | str:
    framer, out = ReplyFramer(), []
    try:
        for i in range(0, len(stream), chunk):
            out += framer.feed(stream[i : i + chunk])
    except ProtocolError as e:
        return f"ProtocolError: {e}"
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_framer_frames_as_the_reply_parser(chunk: int) -> None:
    stream = b"".join(REPLIES) + b"".join(REPLIES[:5])
    assert _framer_raws(stream, chunk) == _parser_raws(stream, chunk) == REPLIES + REPLIES[:5]
    for bad in BAD_REPLIES:
        for stream in (bad, b":1\r\n" + bad, REPLIES[10] + bad + b":1\r\n"):
            assert _framer_raws(stream, chunk) == _parser_raws(stream, chunk), stream[:80]


def test_framer_agrees_on_random_streams() -> None:
    rng = random.Random(170)
    alphabet = b"*$:+-0123456789\r\nab"
    for _ in range(3000):
        stream = bytearray(b"".join(rng.choice(REPLIES[:14]) for _ in range(rng.randint(1, 4))))
        for _ in range(rng.randint(0, 2)):
            at = rng.randrange(len(stream))
            stream[at] = rng.choice(alphabet)
        data = bytes(stream)
        chunk = rng.choice([1, 5, 1 << 20])
        assert _framer_raws(data, chunk) == _parser_raws(data, chunk), data[:80]
