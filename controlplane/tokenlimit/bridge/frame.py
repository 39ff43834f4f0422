"""Where each Redis reply ends, without building a Python object per element.

Why: the bridge forwards Redis' reply bytes untouched, so all it needs from a reply is where it
ends. :class:`tokenlimit.bridge.resp.ReplyParser` builds a :class:`Reply` (and a bytes copy)
for every element: 55 us for the 40-integer reply of a coalesced ``admit_many`` of 8
admissions. :class:`ReplyFramer` walks the headers instead and skips runs of integers and
simple strings with one regular expression: 4.5 us for the same reply (timeit, same machine;
bench/README.md, ``bridge.py``, has what it does to a whole call).

Same framing as ReplyParser, always: the fast walk accepts only what it can check completely
(canonical integers, lines without CR/LF, bulk and array lengths within ReplyParser's bounds);
at anything else it hands the stream, from the first reply not yet framed, to a ReplyParser for
good, which frames it or raises the same :class:`~tokenlimit.bridge.resp.ProtocolError` as
before. Redis itself never sends anything the fast walk leaves out.
"""

from __future__ import annotations

import re

from tokenlimit.bridge.resp import CRLF, MAX_REPLY_BULK, MAX_REPLY_DEPTH, ReplyParser

_INCOMPLETE = -1
_IRREGULAR = -2
# Integers and simple strings / errors, any number in a row; each holds exactly one CRLF.
_SCALARS = re.compile(rb"(?::-?[0-9]{1,19}\r\n|[+\-][^\r\n]*\r\n)*")
_LENGTH = re.compile(rb"[$*](-1|0|[1-9][0-9]{0,9})\r\n")
_LINE_MAX = 2 + 20  # ReplyParser refuses a number line longer than this without CRLF


class ReplyFramer:
    """Incremental: :meth:`feed` takes whatever bytes arrived and returns the wire bytes of each
    reply they completed. A :class:`ProtocolError` leaves it unusable (the connection must go)."""

    __slots__ = ("_buf", "_max_bulk", "_max_depth", "_need", "_slow")

    def __init__(self, *, max_bulk: int = MAX_REPLY_BULK, max_depth: int = MAX_REPLY_DEPTH) -> None:
        self._buf = bytearray()  # the start of a reply not yet complete
        self._need = 0  # do not walk again before the buffer holds this many bytes
        self._max_bulk = max_bulk
        self._max_depth = max_depth
        self._slow: ReplyParser | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self._slow is not None:
            return [reply.raw for reply in self._slow.feed(data)]
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []
            buf = bytes(self._buf)
        else:
            buf = data
        size = len(buf)
        out: list[bytes] = []
        pos = 0
        while pos < size:
            end = self._frame(buf, pos, size)
            if end < 0:
                if end == _IRREGULAR:
                    self._slow = ReplyParser(max_bulk=self._max_bulk, max_depth=self._max_depth)
                    self._buf = bytearray()
                    out += [reply.raw for reply in self._slow.feed(buf[pos:])]
                    return out
                break
            out.append(buf[pos:end] if pos or end != size else buf)
            pos = end
        if pos < size:
            self._buf = bytearray(buf[pos:])
        else:
            self._buf.clear()
            self._need = 0
        return out

    def _frame(self, buf: bytes, pos: int, size: int) -> int:
        """The end of the reply at ``pos``, or _INCOMPLETE (``_need`` set), or _IRREGULAR."""
        start = pos
        need = 1  # elements still to frame at the current nesting level
        stack: list[int] = []  # what is left of each enclosing array
        scalars, length = _SCALARS.match, _LENGTH.match
        while True:
            if need == 0:
                if not stack:
                    return pos
                need = stack.pop()
                continue
            if pos >= size:
                self._need = size + 1 - start
                return _INCOMPLETE
            run = scalars(buf, pos)  # a `*` pattern: always matches, maybe nothing
            end = pos if run is None else run.end()
            if end > pos:
                covered = buf.count(CRLF, pos, end)
                if covered > need:  # the run went past this array: step exactly `need`
                    for _ in range(need):
                        pos = buf.index(CRLF, pos) + 2
                    need = 0
                else:
                    need -= covered
                    pos = end
                continue
            kind = buf[pos]
            m = length(buf, pos)
            if m is None:
                if (
                    kind in b"$*:+-"
                    and buf.find(CRLF, pos) < 0
                    and (kind in b"+-" or size - pos <= _LINE_MAX)
                ):
                    self._need = size + 1 - start
                    return _INCOMPLETE
                return _IRREGULAR
            n = int(m[1])
            pos = m.end()
            need -= 1
            if n < 0:
                continue  # null bulk or null array
            if kind == 0x24:  # $ bulk
                if n > self._max_bulk:
                    return _IRREGULAR
                end = pos + n + 2
                if end > size:
                    self._need = end - start
                    return _INCOMPLETE
                if buf[end - 2 : end] != CRLF:
                    return _IRREGULAR
                pos = end
            else:  # * array
                if len(stack) >= self._max_depth:
                    return _IRREGULAR  # ReplyParser refuses even an empty one this deep
                if n == 0:
                    continue
                stack.append(need)
                need = n
