"""Tests for tokenlimit.bridge.resp: golden bytes, every split point, strict bounds.

The bridge forwards replies byte for byte and trusts split_commands to keep anything odd away
from Redis, so these tests pin exact bytes rather than round-tripping through our own code.
"""

from __future__ import annotations

import pytest
from tokenlimit.bridge.resp import (
    MAX_ARG_BYTES,
    MAX_ARGS,
    ProtocolError,
    Reply,
    ReplyError,
    ReplyParser,
    encode_command,
    encode_commands,
    parse_replies,
    split_commands,
)

# --------------------------------------------------------------------------- encoding


def test_encode_golden() -> None:
    assert encode_command("PING") == b"*1\r\n$4\r\nPING\r\n"
    assert encode_command("EVALSHA", b"ab", 1, "k", -5, "") == (
        b"*6\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n$2\r\n-5\r\n$0\r\n\r\n"
    )
    assert encode_command("SET", "ключ", b"\r\n\x00") == (
        b"*3\r\n$3\r\nSET\r\n$8\r\n\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\r\n$3\r\n\r\n\x00\r\n"
    )
    assert encode_commands([("PING",), ("TIME",)]) == (b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nTIME\r\n")


def test_encode_rejects_odd_arguments() -> None:
    with pytest.raises(ValueError):
        encode_command()
    with pytest.raises(TypeError):
        encode_command("SET", True)
    with pytest.raises(TypeError):
        encode_command("SET", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_command("SET", None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- replies

# (wire bytes, kind, to_python())
GOLDEN_REPLIES: list[tuple[bytes, str, object]] = [
    (b"+OK\r\n", "+", "OK"),
    (b"+\r\n", "+", ""),
    (b":0\r\n", ":", 0),
    (b":-42\r\n", ":", -42),
    (b":9223372036854775807\r\n", ":", 2**63 - 1),
    (b"$5\r\nhello\r\n", "$", b"hello"),
    (b"$0\r\n\r\n", "$", b""),
    (b"$4\r\na\r\nb\r\n", "$", b"a\r\nb"),  # CRLF inside a bulk is data
    (b"$-1\r\n", "$", None),
    (b"*-1\r\n", "*", None),
    (b"*0\r\n", "*", []),
    (b"*3\r\n:1\r\n$-1\r\n+x\r\n", "*", [1, None, "x"]),
    (b"*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n*0\r\n", "*", [[1, 2], [[]]]),
    (b"*2\r\n$2\r\nab\r\n*-1\r\n", "*", [b"ab", None]),
]


@pytest.mark.parametrize(("wire", "kind", "value"), GOLDEN_REPLIES)
def test_reply_golden(wire: bytes, kind: str, value: object) -> None:
    (reply,) = parse_replies(wire)
    assert reply.kind == kind
    assert reply.raw == wire
    assert reply.to_python() == value
    assert not reply.is_error


def test_error_reply() -> None:
    wire = b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
    (reply,) = parse_replies(wire)
    assert reply.is_error and reply.raw == wire
    err = reply.to_python()
    assert isinstance(err, ReplyError)
    assert err.code == "NOSCRIPT"
    assert str(err) == "NOSCRIPT No matching script. Please use EVAL."


def test_nested_replies_keep_raw_bytes() -> None:
    wire = b"*2\r\n*2\r\n:1\r\n$1\r\nx\r\n-ERR e\r\n"
    (reply,) = parse_replies(wire)
    assert isinstance(reply.value, list)
    inner, err = reply.value
    assert inner.raw == b"*2\r\n:1\r\n$1\r\nx\r\n"
    assert err == Reply("-", b"ERR e", b"-ERR e\r\n")


STREAM = b"".join(w for w, _, _ in GOLDEN_REPLIES) + b"-ERR x\r\n"
STREAM_COUNT = len(GOLDEN_REPLIES) + 1


def test_every_single_split_point() -> None:
    expected = [r.raw for r in parse_replies(STREAM)]
    assert len(expected) == STREAM_COUNT
    assert b"".join(expected) == STREAM
    for cut in range(len(STREAM) + 1):
        parser = ReplyParser()
        got = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
        assert [r.raw for r in got] == expected, cut
        assert parser.buffered == 0


def test_byte_by_byte_and_two_cuts() -> None:
    expected = parse_replies(STREAM)
    parser = ReplyParser()
    got: list[Reply] = []
    for i in range(len(STREAM)):
        got += parser.feed(STREAM[i : i + 1])
    assert got == expected
    # every pair of cuts over a shorter nested piece
    piece = b"*3\r\n$3\r\nabc\r\n*2\r\n:1\r\n$-1\r\n+ok\r\n"
    want = parse_replies(piece)
    for a in range(len(piece) + 1):
        for b in range(a, len(piece) + 1):
            p = ReplyParser()
            assert p.feed(piece[:a]) + p.feed(piece[a:b]) + p.feed(piece[b:]) == want, (a, b)


def test_partial_reply_stays_buffered() -> None:
    parser = ReplyParser()
    assert parser.feed(b"$10\r\n01234") == []
    assert parser.buffered == 10
    assert parser.feed(b"5678") == []  # below the known need: not reparsed
    (reply,) = parser.feed(b"9\r\n:1")
    assert reply.value == b"0123456789"
    assert parser.feed(b"\r\n")[0].value == 1


@pytest.mark.parametrize(
    "wire",
    [
        b"?x\r\n",  # unknown type
        b"%1\r\n",  # RESP3 map
        b":12a\r\n",
        b":\r\n",
        b":+1\r\n",
        b"$abc\r\n",
        b"$-2\r\n",
        b"*-2\r\n",
        b"$3\r\nabcXY",  # bulk not followed by CRLF
        b":1" + b"2" * 40,  # integer line far too long without CRLF
    ],
)
def test_reply_parser_rejects(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(wire)


def test_reply_bounds() -> None:
    with pytest.raises(ProtocolError, match="at most 8"):
        ReplyParser(max_bulk=8).feed(b"$9\r\n")
    nested = b"*1\r\n" * 5 + b":1\r\n"
    assert ReplyParser(max_depth=5).feed(nested)
    with pytest.raises(ProtocolError, match="nested"):
        ReplyParser(max_depth=4).feed(nested)
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"*1\r\n" * 100 + b":1\r\n")  # default depth 64


def test_parse_replies_requires_whole_replies() -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        parse_replies(b"+OK\r\n$3\r\nab")


# --------------------------------------------------------------------------- commands


def test_split_commands_golden() -> None:
    body = (
        b"*3\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n0\r\n"
        b"*1\r\n$4\r\nPING\r\n"
        b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"
        b"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n"
    )
    assert split_commands(body) == [
        [b"EVALSHA", b"ab", b"0"],
        [b"PING"],
        [b"ECHO", b""],
        [b"GET", b"a\r\nb"],
    ]
    cmds = [["EVAL", "return 1", "0"], ["TIME"]]
    assert split_commands(encode_commands(cmds)) == [[b"EVAL", b"return 1", b"0"], [b"TIME"]]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty"),
        (b"PING\r\n", "expected '\\*'"),  # inline command
        (b"*1\r\n$4\r\nPING", "truncated"),
        (b"*1\r\n$4\r\nPIN", "truncated"),
        (b"*2\r\n$4\r\nPING\r\n", "truncated"),
        (b"*1\r\n$4\r\nPINGX\r\n", "CRLF"),
        (b"*1\r\n$3\r\nPING\r\n", "CRLF"),
        (b"*0\r\n", "empty command"),
        (b"*-1\r\n", "decimal"),
        (b"*+1\r\n$4\r\nPING\r\n", "decimal"),
        (b"*01\r\n$4\r\nPING\r\n", "decimal"),
        (b"*1\r\n$-1\r\n", "decimal"),
        (b"*1\r\n$04\r\nPING\r\n", "decimal"),
        (b"*1\r\n:4\r\n", "expected '\\$'"),
        (b"*1\r\n*1\r\n$4\r\nPING\r\n", "expected '\\$'"),  # nested array
        (b"*1\r\n$4\r\nPING\r\n\r\n", "expected '\\*'"),  # trailing bytes
        (b"*1\r\n$4\r\nPING\r\nx", "expected '\\*'"),
        (b"*1\n$4\nPING\n", "CRLF"),
        (b"*1 \r\n$4\r\nPING\r\n", "decimal"),
        (b"*" + b"9" * 30 + b"\r\n", "short decimal"),
        (b"*1\r\n$\xd9\xa3\r\nabc\r\n", "decimal"),  # non-ASCII digit
    ],
)
def test_split_commands_rejects(body: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        split_commands(body)


def test_split_commands_bounds() -> None:
    # arguments per command
    at_limit = encode_command(*(["x"] * MAX_ARGS))
    assert len(split_commands(at_limit)[0]) == MAX_ARGS
    with pytest.raises(ProtocolError, match="arguments"):
        split_commands(encode_command(*(["x"] * (MAX_ARGS + 1))))
    # the argument count is refused from the header alone (no need to send the arguments)
    with pytest.raises(ProtocolError, match="arguments"):
        split_commands(b"*100000\r\n")
    # bytes per argument
    big = b"v" * MAX_ARG_BYTES
    assert split_commands(encode_command("EVAL", big))[0][1] == big
    with pytest.raises(ProtocolError, match="bytes"):
        split_commands(encode_command("EVAL", big + b"v"))
    with pytest.raises(ProtocolError, match="bytes"):
        split_commands(b"*1\r\n$999999999\r\n")
    # commands per pipeline
    pipeline = encode_command("PING") * 64
    assert len(split_commands(pipeline, max_commands=64)) == 64
    with pytest.raises(ProtocolError, match="too many commands"):
        split_commands(pipeline + encode_command("PING"), max_commands=64)
    # custom bounds
    with pytest.raises(ProtocolError):
        split_commands(encode_command("a", "b", "c"), max_args=2)
    with pytest.raises(ProtocolError):
        split_commands(encode_command("abcd"), max_arg_bytes=3)


def test_split_commands_every_truncation_fails() -> None:
    body = encode_commands([("EVALSHA", "f" * 40, 1, "{k}", 100), ("PING",)])
    assert len(split_commands(body)) == 2
    for cut in range(1, len(body)):
        prefix = body[:cut]
        # a cut that lands exactly between two commands is a complete, shorter pipeline
        if prefix == encode_command("EVALSHA", "f" * 40, 1, "{k}", 100):
            assert len(split_commands(prefix)) == 1
            continue
        with pytest.raises(ProtocolError):
            split_commands(prefix)
