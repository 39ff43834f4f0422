"""The contract's Lua scripts as the filter embeds and sends them: comments and indentation gone.

contract/*.lua are written to be read (long header comments, one per calling convention), and
the filter used to embed them as written: about 23 KB of the module's data was Lua comments and
indentation (issue 17, the module size). This minifier makes contract/min/*.lua from them; the
filter embeds those (filter/build.zig `addContract`), the bridge allows exactly those by SHA-1
(bridge/guard.py) and `tokenlimit usage` sends them, so every caller runs the same bytes.

It works on tokens, with a real Lua 5.1 tokenizer (Redis runs Lua 5.1): strings ('..', "..",
[[..]], [==[..]==]) are copied byte for byte, comments (-- and --[[ ]]) dropped, and between two
tokens only what keeps them apart is written (a space, or the newline the source had). Every
newline of the source is kept, so a Redis error's `user_script:<line>` names the source line.
`minify` re-reads its own output and refuses to return one whose tokens differ from the
source's: the Lua meaning cannot change silently.

    python -m tokenlimit.contract_min [--check] [CONTRACT_DIR]

writes contract/min/ (the files are committed, like the CRDs); `--check` only compares, and
tests/contract/test_contract_min.py fails with this command when a file is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# The scripts the filter embeds; calendar.lua + budget.lua are also sent joined (calendar.lua).
SCRIPTS = ("budget.lua", "cache.lua", "calendar.lua", "higress_compat.lua")
MIN_FOLDER = "min"
REGENERATE = "PYTHONPATH=$PWD/controlplane .venv/bin/python -m tokenlimit.contract_min"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Lua 5.1's read_numeral: digits and dots, an optional E with an optional sign, alphanumerics.
_NUMBER = re.compile(r"(?:\d|\.\d)[0-9.]*(?:[eE][+-]?)?[0-9A-Za-z_]*")
_LONG_OPEN = re.compile(r"\[(=*)\[")
_OPERATORS = ("...", "..", "==", "~=", "<=", ">=")
_SINGLE = set("+-*/%^#<>=(){}[];:,.")


class LuaSyntaxError(ValueError):
    """The source is not Lua the tokenizer understands (an unclosed string or comment)."""


def _long_bracket_end(source: str, at: int, level: str, what: str) -> int:
    close = "]" + level + "]"
    end = source.find(close, at)
    if end < 0:
        raise LuaSyntaxError(f"unclosed long {what} at offset {at}")
    return end + len(close)


def _quoted_end(source: str, at: int) -> int:
    quote = source[at]
    index = at + 1
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if char == quote:
            return index + 1
        if char == "\n":
            break
        index += 1
    raise LuaSyntaxError(f"unclosed string at offset {at}")


def tokens(source: str) -> list[tuple[str, int]]:
    """The tokens of a Lua chunk, each with the newlines before it (since the previous token)."""
    out: list[tuple[str, int]] = []
    newlines = 0
    at = 0
    while at < len(source):
        char = source[at]
        if char in " \t\r\f\v":
            at += 1
        elif char == "\n":
            newlines += 1
            at += 1
        elif source.startswith("--", at):
            opened = _LONG_OPEN.match(source, at + 2)
            end = (
                _long_bracket_end(source, opened.end(), opened.group(1), "comment")
                if opened
                else (source.find("\n", at) % (len(source) + 1))
            )
            newlines += source.count("\n", at, end)
            at = end
        else:
            if char in "'\"":
                end = _quoted_end(source, at)
            elif (opened := _LONG_OPEN.match(source, at)) is not None:
                end = _long_bracket_end(source, opened.end(), opened.group(1), "string")
            elif (name := _NAME.match(source, at)) is not None:
                end = name.end()
            elif (number := _NUMBER.match(source, at)) is not None:
                end = number.end()
            elif operator := next((o for o in _OPERATORS if source.startswith(o, at)), None):
                end = at + len(operator)
            elif char in _SINGLE:
                end = at + 1
            else:
                raise LuaSyntaxError(f"unexpected {char!r} at offset {at}")
            out.append((source[at:end], newlines))
            newlines = 0  # a string's own newlines are in its text
            at = end
    if newlines:
        out.append(("", newlines))  # the trailing newlines, so the line count is kept
    return out


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _needs_space(left: str, right: str) -> bool:
    """Whether `left` and `right` written back to back would read as other tokens."""
    last, first = left[-1], right[0]
    if _word(last) and _word(first):
        return True
    if (left[0].isdigit() or (left[0] == "." and len(left) > 1 and left[1].isdigit())) and (
        first == "." or _word(first)
    ):
        return True
    return last + first in {"--", "==", "~=", "<=", ">=", "..", "[[", "[="} or (
        last == "." and first.isdigit()
    )


def minify(source: str) -> str:
    """`source` without comments and indentation, every line kept in place (see the module)."""
    pieces: list[str] = []
    previous = ""
    for text, newlines in tokens(source):
        if newlines:
            pieces.append("\n" * newlines)
        elif previous and text and _needs_space(previous, text):
            pieces.append(" ")
        pieces.append(text)
        if text:
            previous = text
    result = "".join(pieces)
    if [t for t, _ in tokens(result) if t] != [t for t, _ in tokens(source) if t]:
        raise AssertionError("minified Lua reads as different tokens; the minifier has a bug")
    if result.count("\n") != source.count("\n"):
        raise AssertionError("minified Lua lost or gained lines; the minifier has a bug")
    return result


def generate(contract: Path) -> dict[str, str]:
    """contract/min/<name> for every embedded script: its text, minified."""
    return {name: minify((contract / name).read_text()) for name in SCRIPTS}


def stale(contract: Path) -> list[str]:
    """The files under contract/min/ that differ from what `generate` makes (or are missing)."""
    folder = contract / MIN_FOLDER
    return [
        name
        for name, text in generate(contract).items()
        if not (folder / name).is_file() or (folder / name).read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokenlimit.contract_min", description=__doc__)
    parser.add_argument("contract", nargs="?", type=Path, default=Path("contract"))
    parser.add_argument("--check", action="store_true", help="only say which files are stale")
    options = parser.parse_args(argv)
    contract: Path = options.contract
    if options.check:
        names = stale(contract)
        for name in names:
            print(f"{contract / MIN_FOLDER / name} is stale: run {REGENERATE}", file=sys.stderr)
        return 1 if names else 0
    (contract / MIN_FOLDER).mkdir(exist_ok=True)
    for name, text in generate(contract).items():
        target = contract / MIN_FOLDER / name
        before = (contract / name).stat().st_size
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
        print(f"{target}: {before:,} -> {len(text.encode()):,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
