"""The /v1/resp body check on the fast path: walk the RESP headers, keep only what the
allowlist reads.

Why: :func:`tokenlimit.bridge.resp.split_commands` builds a bytes object per argument and
parses every header in Python, about 0.7 us per argument: 55 us for one coalesced
``admit_many`` of 8 admissions (79 arguments, bench/bridge.py). The allowlist only reads a
command's first three arguments (the name, the SCRIPT subcommand, the SHA-1 or script body),
and the body is forwarded untouched, so :func:`scan_commands` materialises those three and
skips the rest with one regular expression that matches a whole run of short bulk strings in
C (about 0.09 us per argument).

Same answer as split_commands, always: the fast path accepts only bodies it can check
completely (canonical headers, lengths within the bounds, CRLF where it belongs). Anything
else -- a bound exceeded, a stray byte, a truncation, an argument with CR or LF inside that the
run pattern does not cover -- goes to split_commands, which raises the exact
:class:`ProtocolError` the bridge has always answered 400 with (or, should the fast path have
been stricter than needed, accepts). tests/bridge/test_scan.py holds both to the same result.
"""

from __future__ import annotations

import re

from tokenlimit.bridge.resp import CRLF, MAX_ARG_BYTES, MAX_ARGS, split_commands

#: How many leading arguments of a command the allowlist reads (guard.Scripts.refusal reads
#: command[2] for SCRIPT LOAD; server.command_label reads command[1]).
HEAD_ARGS = 3

_ARRAY = re.compile(rb"\*([1-9][0-9]{0,5})\r\n")
_BULK = re.compile(rb"\$(0|[1-9][0-9]{0,7})\r\n")
_RUN_MAX_LEN = 99


def _run_pattern() -> re.Pattern[bytes]:
    """Zero or more bulk strings of 0..99 bytes without CR or LF inside, as a digit trie
    (``$7\\r\\n`` then exactly 7 such bytes then CRLF). The lengths are in the pattern, so the
    regex engine enforces them; without CR/LF in the content every element holds exactly two
    CRLFs, which is how the caller counts the arguments a match covered."""
    branches = [r"0\r\n\r\n"]
    for first in range(1, 10):
        alternatives = [rf"\r\n[^\r\n]{{{first}}}\r\n"]
        for second in range(10):
            alternatives.append(rf"{second}\r\n[^\r\n]{{{first * 10 + second}}}\r\n")
        branches.append(f"{first}(?:{'|'.join(alternatives)})")
    return re.compile(rf"(?:\$(?:{'|'.join(branches)}))*".encode())


_RUN = _run_pattern()


def _slow(
    body: bytes, max_commands: int | None, max_args: int, max_arg_bytes: int
) -> list[list[bytes]]:
    commands = split_commands(
        body, max_commands=max_commands, max_args=max_args, max_arg_bytes=max_arg_bytes
    )
    return [command[:HEAD_ARGS] for command in commands]


def scan_commands(
    body: bytes,
    *,
    max_commands: int | None = None,
    max_args: int = MAX_ARGS,
    max_arg_bytes: int = MAX_ARG_BYTES,
) -> list[list[bytes]]:
    """Each command's first :data:`HEAD_ARGS` arguments (fewer when it has fewer), in order.

    Accepts and refuses exactly what :func:`split_commands` does with the same bounds (it
    raises :class:`~tokenlimit.bridge.resp.ProtocolError`)."""
    size = len(body)
    run_ok = max_arg_bytes >= _RUN_MAX_LEN
    heads: list[list[bytes]] = []
    pos = 0
    array_match, bulk_match, run_match, count_crlf = (
        _ARRAY.match,
        _BULK.match,
        _RUN.match,
        body.count,
    )
    while pos < size:
        if max_commands is not None and len(heads) >= max_commands:
            break
        m = array_match(body, pos)
        if m is None:
            break
        count = int(m[1])
        if count > max_args:
            break
        pos = m.end()
        head: list[bytes] = []
        i = 0
        while i < count:
            if i >= HEAD_ARGS and run_ok:
                run = run_match(body, pos)  # a `*` pattern: always matches, maybe nothing
                end = pos if run is None else run.end()
                if end > pos:
                    covered = count_crlf(CRLF, pos, end) >> 1
                    if i + covered > count:
                        break  # more bulk strings than the array holds: split_commands says why
                    i += covered
                    pos = end
                    continue
            b = bulk_match(body, pos)
            if b is None:
                break
            length = int(b[1])
            start = b.end()
            end = start + length
            if length > max_arg_bytes or body[end : end + 2] != CRLF:
                break
            if i < HEAD_ARGS:
                head.append(body[start:end])
            pos = end + 2
            i += 1
        if i != count:
            return _slow(body, max_commands, max_args, max_arg_bytes)
        heads.append(head)
    if pos != size or not heads:
        return _slow(body, max_commands, max_args, max_arg_bytes)
    return heads
