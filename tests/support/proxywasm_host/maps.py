"""Header maps: Envoy's ordered multi-map and the ABI's serialized form of it."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Union

from support.proxywasm_host.abi import bytes_of, text_of

HeaderInput = Union[Mapping[str, str], Iterable[tuple[str, str]], "HeaderMap"]


def _pairs_of(headers: HeaderInput | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, HeaderMap):
        return list(headers.items())
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def serialize_header_map(pairs: HeaderInput) -> bytes:
    """Serializes header pairs as the ABI does (an empty map is just a zero count)."""
    items = [(bytes_of(k), bytes_of(v)) for k, v in _pairs_of(pairs)]
    out = bytearray(struct.pack("<I", len(items)))
    for key, value in items:
        out += struct.pack("<II", len(key), len(value))
    for key, value in items:
        out += key + b"\0" + value + b"\0"
    return bytes(out)


def deserialize_header_map(data: bytes) -> list[tuple[str, str]] | None:
    """Parses a serialized header map; None when malformed (Envoy then uses an empty map)."""
    if len(data) == 0:
        return []
    if len(data) < 4:
        return None
    (count,) = struct.unpack_from("<I", data, 0)
    pos = 4 + 8 * count
    if pos > len(data):
        return None
    pairs: list[tuple[str, str]] = []
    for i in range(count):
        klen, vlen = struct.unpack_from("<II", data, 4 + 8 * i)
        end_key = pos + klen
        end_value = end_key + 1 + vlen
        if end_value + 1 > len(data) or data[end_key] != 0 or data[end_value] != 0:
            return None
        pairs.append((text_of(data[pos:end_key]), text_of(data[end_key + 1 : end_value])))
        pos = end_value + 1
    return pairs if pos == len(data) else None


class HeaderMap:
    """An ordered multi-map with lower-case keys, like Envoy's (pseudo-headers stay first)."""

    def __init__(self, headers: HeaderInput | None = None) -> None:
        self._pairs: list[tuple[str, str]] = []
        for key, value in _pairs_of(headers):
            self.add(key, value)

    def add(self, key: str, value: str) -> None:
        key = key.lower()
        at = len(self._pairs)
        if key.startswith(":"):
            at = next((i for i, (k, _) in enumerate(self._pairs) if not k.startswith(":")), at)
        self._pairs.insert(at, (key, value))

    def replace(self, key: str, value: str) -> None:
        key = key.lower()
        hits = [i for i, (k, _) in enumerate(self._pairs) if k == key]
        if not hits:
            self.add(key, value)
            return
        self._pairs[hits[0]] = (key, value)
        for i in reversed(hits[1:]):
            del self._pairs[i]

    def remove(self, key: str) -> None:
        key = key.lower()
        self._pairs = [(k, v) for k, v in self._pairs if k != key]

    def get(self, key: str, default: str | None = None) -> str | None:
        key = key.lower()
        return next((v for k, v in self._pairs if k == key), default)

    def get_all(self, key: str) -> list[str]:
        key = key.lower()
        return [v for k, v in self._pairs if k == key]

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def to_dict(self) -> dict[str, str]:
        """Keys to their first value."""
        out: dict[str, str] = {}
        for key, value in self._pairs:
            out.setdefault(key, value)
        return out

    def byte_size(self) -> int:
        return sum(len(bytes_of(k)) + len(bytes_of(v)) for k, v in self._pairs)

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._pairs))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HeaderMap):
            return self._pairs == other._pairs
        if isinstance(other, Mapping):
            return self.to_dict() == {k.lower(): v for k, v in other.items()}
        if isinstance(other, list):
            return self._pairs == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HeaderMap({self._pairs!r})"


def response_headers_of(headers: int | HeaderInput) -> HeaderMap:
    """Response headers as tests give them: a bare status code stands for ``:status`` alone."""
    if isinstance(headers, int):
        return HeaderMap([(":status", str(headers))])
    return HeaderMap(headers)
