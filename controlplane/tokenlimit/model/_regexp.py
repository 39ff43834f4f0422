"""Syntax check for `regexp:` limit keys: a port of the filter's parser (filter/src/config/regex/).

The filter matches keys with its own linear-time matcher: Go's regexp syntax (what Higress users
write), less what it refuses, matched by character as Go does. `re.compile` cannot stand in for
it: it refuses patterns the filter accepts (`^*a`, `\\p{Han}`) and accepts patterns the filter
refuses (`(?m)`, `(?i:...)`). So this module follows parse.zig's recursive-descent parser step
by step, with the same checks in the same order and the same messages, and computes the size
of the program the filter would compile (the filter refuses more than 1024 instructions). Keep
the two in step: tests/model/test_model_vectors.py checks this port against the tables of
regex_test.zig and regex_limits_test.zig.

Supported: literals (any UTF-8), `.`, `^ $ \\A \\z \\b \\B`, `|`, `(re)`, `(?:re)`,
`(?P<name>re)`, `(?<name>re)`, classes `[a-z]` `[^...]` (a literal `]` written `\\]`) with POSIX
`[:alpha:]` items, `\\d \\w \\s \\D \\W \\S`, `\\p{Script}` `\\P{Script}` `\\p{^Script}` for the
scripts in `UNICODE_SCRIPTS`, escaped ASCII punctuation, `\\a \\n \\r \\t \\f \\v \\xHH \\x{H..}`,
`* + ? {n} {n,} {n,m}` (n, m <= 1000) with an optional lazy `?`, and `(?i)` at the very start.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

PATTERN_BYTES_MAX = 256
PROGRAM_INSTRUCTIONS_MAX = 1024
REPEAT_COUNT_MAX = 1000
_NODES_MAX = 2 * PATTERN_BYTES_MAX + 2
_COMPILE_STEPS_MAX = 16 * PROGRAM_INSTRUCTIONS_MAX
_UNBOUNDED = -1
_PUNCTUATION = frozenset(string.punctuation.encode())
_PERL_CLASSES = frozenset(b"dDwWsS")
_CONTROL_ESCAPES = {ord("a"): 0x07, ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09}
_CONTROL_ESCAPES |= {ord("f"): 0x0C, ord("v"): 0x0B}
_MAX_CODE_POINT = 0x10FFFF
# filter/src/config/regex/unicode.zig: the scripts `\p{..}` can name, in its order.
UNICODE_SCRIPTS = ("Cyrillic", "Greek", "Han", "Hangul", "Hiragana", "Katakana", "Latin")
POSIX_CLASSES = frozenset(
    {
        *("alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph"),
        *("lower", "print", "punct", "space", "upper", "word", "xdigit"),
    }
)
_WORD_BYTES = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_GROUP_SYNTAX = (
    "unsupported group syntax; only (...), (?:...), (?P<name>...), (?<name>...) and a leading "
    "(?i) are supported"
)
_GROUP_NAME = "invalid group name; write (?P<name>...) with letters, digits and _"
_HEX_ESCAPE = "\\x must be followed by two hex digits or by {hex digits} up to 10FFFF"
_UNICODE_CLASS = "unsupported unicode class; supported: \\p{Name} for the scripts " + ", ".join(
    UNICODE_SCRIPTS
)
_POSIX_CLASS = (
    "unknown POSIX class; use one of alnum alpha ascii blank cntrl digit graph lower print "
    "punct space upper word xdigit, as [[:alpha:]]"
)
_ESCAPES = (
    "unsupported escape sequence; only punctuation, \\d \\w \\s \\D \\W \\S, \\p{..} \\P{..}, "
    "\\b \\B \\A \\z, \\a \\n \\r \\t \\f \\v, \\xHH and \\x{H..} may be escaped"
)
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_FOLD_CASE_PREFIX = b"(?i)"


class _Refused(Exception):
    """regex.zig's InvalidPattern (with an offset) or PatternTooComplex (offset None)."""

    def __init__(self, offset: int | None, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


@dataclass(frozen=True)
class _Size:
    """What compiling a node costs the filter: emitted instructions and compile steps."""

    insts: int
    steps: int


_ONE = _Size(insts=1, steps=1)
_EMPTY = _Size(insts=0, steps=1)


def regexp_problem(pattern: str) -> str | None:
    """Why the filter would refuse `pattern` (its own words), or None when it compiles it."""
    try:
        encoded = pattern.encode()
    except UnicodeEncodeError as error:  # a lone surrogate: no UTF-8 spells it
        offset = len(pattern[: error.start].encode())
        return f"invalid regexp at offset {offset}: invalid UTF-8 in pattern"
    try:
        _Parser(encoded).parse()
    except _Refused as refused:
        if refused.offset is None:
            return f"regexp is too complex: {refused.message}"
        return f"invalid regexp at offset {refused.offset}: {refused.message}"
    return None


class _Parser:
    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.pos = 0
        self.nodes = 0
        self.names: set[bytes] = set()

    def parse(self) -> None:
        if len(self.pattern) > PATTERN_BYTES_MAX:
            raise _Refused(None, f"pattern is longer than {PATTERN_BYTES_MAX} bytes")
        if self.pattern.startswith(_FOLD_CASE_PREFIX):
            self.pos = len(_FOLD_CASE_PREFIX)
        size = self._alternation()
        if self.pos < len(self.pattern):
            raise _Refused(self.pos, "unmatched ')'")
        # The filter stops compiling at the first instruction or step over its bounds; the
        # totals are over the bounds exactly when it would stop. (+1: the final `match`.)
        if size.insts + 1 > PROGRAM_INSTRUCTIONS_MAX or size.steps > _COMPILE_STEPS_MAX:
            raise _Refused(
                None,
                f"pattern expands to more than {PROGRAM_INSTRUCTIONS_MAX} instructions; "
                "reduce the counted repetition",
            )

    def _at(self, byte: int) -> bool:
        return self.pos < len(self.pattern) and self.pattern[self.pos] == byte

    def _node(self, size: _Size) -> _Size:
        if self.nodes == _NODES_MAX:
            raise _Refused(None, "pattern has too many parts")
        self.nodes += 1
        return size

    def _alternation(self) -> _Size:
        branches = [self._concat()]
        while self._at(ord("|")):
            self.pos += 1
            branches.append(self._concat())
        if len(branches) == 1:
            return branches[0]
        # split + branch + jump for every branch but the last.
        insts = sum(b.insts for b in branches) + 2 * (len(branches) - 1)
        return self._node(_Size(insts=insts, steps=1 + sum(b.steps for b in branches)))

    def _concat(self) -> _Size:
        items: list[_Size] = []
        while self.pos < len(self.pattern) and not self._at(ord("|")) and not self._at(ord(")")):
            items.append(self._repeat())
        if not items:
            return self._node(_EMPTY)
        if len(items) == 1:
            return items[0]
        insts = sum(i.insts for i in items)
        return self._node(_Size(insts=insts, steps=1 + sum(i.steps for i in items)))

    def _repeat(self) -> _Size:
        size = self._atom()
        quantified = False
        while self.pos < len(self.pattern):
            start = self.pos
            byte = self.pattern[self.pos]
            low, high = 0, _UNBOUNDED
            if byte in b"*+?":
                self.pos += 1
                low, high = (1, _UNBOUNDED) if byte == ord("+") else (0, _UNBOUNDED)
                if byte == ord("?"):
                    high = 1
            elif byte == ord("{"):
                count = self._count()
                if count is None:
                    break
                low, high = count
            else:
                break
            if quantified:
                raise _Refused(
                    start,
                    "quantifier follows another quantifier; nested and possessive "
                    "quantifiers are not supported",
                )
            quantified = True
            if self._at(ord("?")):
                self.pos += 1  # lazy: same match / no-match result
            size = self._node(_repeated(size, low, high))
        return size

    def _count(self) -> tuple[int, int] | None:
        """`{n}`, `{n,}` or `{n,m}` at pos, or None (pos unchanged): then `{` is a literal."""
        start = self.pos
        i = start + 1
        low, i = _digits(self.pattern, i)
        if low is None:
            return None
        high = low
        if i < len(self.pattern) and self.pattern[i] == ord(","):
            i += 1
            if i < len(self.pattern) and self.pattern[i] == ord("}"):
                high = _UNBOUNDED
            else:
                upper, i = _digits(self.pattern, i)
                if upper is None:
                    return None
                high = upper
        if i >= len(self.pattern) or self.pattern[i] != ord("}"):
            return None
        self.pos = i + 1
        if low > REPEAT_COUNT_MAX or high > REPEAT_COUNT_MAX:
            raise _Refused(None, f"repetition count is larger than {REPEAT_COUNT_MAX}")
        if high != _UNBOUNDED and high < low:
            raise _Refused(start, "repetition range {n,m} has n greater than m")
        return low, high

    def _atom(self) -> _Size:
        start = self.pos
        byte = self.pattern[start]
        if byte == ord("("):
            return self._group()
        if byte == ord("["):
            self._class()
            return self._node(_ONE)
        if byte == ord("\\"):
            if self.pattern[start + 1 : start + 2] in (b"b", b"B", b"A", b"z"):
                self.pos += 2  # an assertion: one instruction
            else:
                self._escape()
            return self._node(_ONE)
        if byte in b"*+?":
            raise _Refused(start, "quantifier has nothing to repeat")
        if byte == ord("{") and self._count() is not None:
            raise _Refused(start, "quantifier has nothing to repeat")
        if byte not in b".^$":
            self._literal()
            return self._node(_ONE)
        self.pos += 1  # `.`, `^`, `$`: one instruction each
        return self._node(_ONE)

    def _literal(self) -> int:
        """The code point of the UTF-8 character at pos (the pattern came from a `str`)."""
        length = _utf8_length(self.pattern[self.pos])
        char = self.pattern[self.pos : self.pos + length]
        self.pos += length
        return ord(char.decode())

    def _group(self) -> _Size:
        start = self.pos
        self.pos += 1
        if self._at(ord("?")):
            rest = self.pattern[start + 2 :]
            first = rest[0] if len(rest) > 0 else 0
            second = rest[1] if len(rest) > 1 else 0
            if first in b"=!" or (first == ord("<") and second in b"=!"):
                raise _Refused(start, "lookaround is not supported (RE2 syntax)")
            if first == ord("<") or (first == ord("P") and second == ord("<")):
                self._group_name(start, start + (3 if first == ord("<") else 4))
            elif first == ord("i") and second == ord(")"):
                raise _Refused(start, "the (?i) flag is only supported at the start of the pattern")
            elif first == ord(":"):
                self.pos += 2
            else:
                raise _Refused(start, _GROUP_SYNTAX)
        inner = self._alternation()
        if not self._at(ord(")")):
            raise _Refused(start, "missing closing ')' for group")
        self.pos += 1
        return inner

    def _group_name(self, start: int, name_start: int) -> None:
        close = self.pattern.find(b">", name_start)
        if close < 0:
            raise _Refused(start, _GROUP_NAME)
        name = self.pattern[name_start:close]
        if not name or any(c not in _WORD_BYTES for c in name):
            raise _Refused(start, _GROUP_NAME)
        if name in self.names:
            raise _Refused(start, "duplicate group name")
        self.names.add(name)
        self.pos = close + 1

    def _class(self) -> None:
        start = self.pos
        self.pos += 1
        if self._at(ord("^")):
            self.pos += 1
        if self._at(ord("]")):
            raise _Refused(start, "empty character class; write a literal ']' as \\]")
        while not self._at(ord("]")):
            if self.pos >= len(self.pattern):
                raise _Refused(start, "missing closing ']' for character class")
            item_start = self.pos
            first = self._class_item()
            if (
                self.pos + 1 < len(self.pattern)
                and self._at(ord("-"))
                and self.pattern[self.pos + 1] != ord("]")
            ):
                self.pos += 1
                last = self._class_item()
                if first is None or last is None:
                    raise _Refused(item_start, "a class escape like \\d cannot be a range endpoint")
                if first > last:
                    raise _Refused(item_start, "invalid class range: start is greater than end")
        self.pos += 1

    def _class_item(self) -> int | None:
        """The code point of a class item, or None for a class such as `\\d` or `[:alpha:]`."""
        byte = self.pattern[self.pos]
        if byte == ord("\\"):
            return self._escape()
        if self.pattern.startswith(b"[:", self.pos):
            close = self.pattern.find(b":]", self.pos + 2)
            if close >= 0:  # as Go: `[:` starts a POSIX class only when `:]` closes it
                name = self.pattern[self.pos + 2 : close].removeprefix(b"^").decode()
                if name not in POSIX_CLASSES:
                    raise _Refused(self.pos, _POSIX_CLASS)
                self.pos = close + 2
                return None
        return self._literal()

    def _escape(self) -> int | None:
        """The code point an escape stands for, or None for a class such as `\\d`."""
        start = self.pos
        if start + 1 == len(self.pattern):
            raise _Refused(start, "trailing backslash at end of pattern")
        byte = self.pattern[start + 1]
        self.pos = start + 2
        if byte in _PERL_CLASSES:
            return None
        if byte in b"pP":
            self._unicode_class(start)
            return None
        if byte in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[byte]
        if byte == ord("x"):
            return self._hex_escape(start)
        if byte in b"123456789k":
            raise _Refused(start, "backreferences are not supported (RE2 syntax)")
        if byte in b"bB":
            raise _Refused(start, "word boundaries (\\b, \\B) are not allowed inside a class")
        if byte in _PUNCTUATION:
            return byte
        raise _Refused(start, _ESCAPES)

    def _hex_escape(self, start: int) -> int:
        braced = self._at(ord("{"))
        digits_start = start + 3 if braced else start + 2
        if braced:
            digits_end = self.pattern.find(b"}", digits_start)
            if digits_end < 0:
                raise _Refused(start, _HEX_ESCAPE)
        else:
            digits_end = min(digits_start + 2, len(self.pattern))
        digits = self.pattern[digits_start:digits_end]
        if not digits or (not braced and len(digits) != 2) or len(digits) > 6:
            raise _Refused(start, _HEX_ESCAPE)
        if any(d not in _HEX_DIGITS for d in digits) or int(digits, 16) > _MAX_CODE_POINT:
            raise _Refused(start, _HEX_ESCAPE)
        self.pos = digits_end + 1 if braced else digits_end
        return int(digits, 16)

    def _unicode_class(self, start: int) -> None:
        if not self._at(ord("{")):
            raise _Refused(start, _UNICODE_CLASS)
        close = self.pattern.find(b"}", self.pos)
        if close < 0:
            raise _Refused(start, "missing closing '}' for \\p{...}")
        name = self.pattern[self.pos + 1 : close].removeprefix(b"^")
        if name.decode() not in UNICODE_SCRIPTS:
            raise _Refused(start, _UNICODE_CLASS)
        self.pos = close + 1


def _utf8_length(first: int) -> int:
    return 1 if first < 0x80 else 2 if first < 0xE0 else 3 if first < 0xF0 else 4


def _digits(pattern: bytes, i: int) -> tuple[int | None, int]:
    """Decimal digits at i (saturating just above the repeat bound) and the index after."""
    start = i
    value = 0
    while i < len(pattern) and pattern[i] in b"0123456789":
        value = min(value * 10 + pattern[i] - ord("0"), REPEAT_COUNT_MAX + 1)
        i += 1
    return (None, i) if i == start else (value, i)


def _repeated(body: _Size, low: int, high: int) -> _Size:
    """Cost of compiling `body{low,high}` the way regex.zig's compileRepeat does."""
    if high == _UNBOUNDED and low == 0:  # split, body, jump
        return _Size(insts=body.insts + 2, steps=1 + body.steps)
    if high == _UNBOUNDED:  # body x low, then a split looping on the last copy
        return _Size(insts=low * body.insts + 1, steps=1 + low * body.steps)
    # body x low, then (split + body) for each optional copy
    return _Size(
        insts=low * body.insts + (high - low) * (body.insts + 1),
        steps=1 + high * body.steps,
    )
