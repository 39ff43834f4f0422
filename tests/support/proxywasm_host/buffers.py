"""Host functions over what the module reads and writes of a stream or call: buffers (bodies,
configuration, call responses) and header maps, each reachable only while Envoy holds it."""

from __future__ import annotations

from collections.abc import Callable

from support.proxywasm_host.abi import (
    MAX_BUFFERTYPE,
    MAX_MAPTYPE,
    BufferType,
    MapType,
    Status,
    bytes_of,
    hostcall,
    text_of,
)
from support.proxywasm_host.maps import HeaderMap, serialize_header_map
from support.proxywasm_host.vm import VmBase


class BufferCalls(VmBase):
    """proxy_{get,set}_buffer_*, proxy_*_header_map_*."""

    vm_config: bytes
    plugin_config: bytes | None
    _in_configure: bool
    _http_response: tuple[HeaderMap, bytes, HeaderMap] | None
    _redis_reply: bytes | None

    # -- buffers -------------------------------------------------------------------------------
    def _buffer(self, kind: int) -> bytes | bytearray | None:
        """The buffer ``kind`` as Envoy's getBuffer sees it now (None: not available)."""
        stream = self._stream()
        if kind in (BufferType.REQUEST_BODY, BufferType.RESPONSE_BODY):
            if stream is None:
                return b""
            side = stream._req if kind == BufferType.REQUEST_BODY else stream._resp
            return side.body if side.body is not None else b""
        if kind in (BufferType.DOWNSTREAM_DATA, BufferType.UPSTREAM_DATA):
            return b""
        if kind == BufferType.HTTP_CALL_RESPONSE_BODY:
            return None if self._http_response is None else self._http_response[1]
        if kind == BufferType.VM_CONFIGURATION:
            return self.vm_config
        if kind == BufferType.PLUGIN_CONFIGURATION:
            return self.plugin_config if self._in_configure else None
        if kind == BufferType.REDIS_CALL_RESPONSE:
            return self._redis_reply
        return None

    @hostcall("proxy_get_buffer_bytes", "iiiii")
    def _proxy_get_buffer_bytes(
        self, kind: int, start: int, size: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        if kind > MAX_BUFFERTYPE:
            return self._warn(Status.BAD_ARGUMENT, f"proxy_get_buffer_bytes type {kind}")
        buffer = self._buffer(kind)
        if buffer is None:
            return self._warn(
                Status.NOT_FOUND, f"proxy_get_buffer_bytes({BufferType(kind).name}) unavailable"
            )
        return self._copy_out(bytes(buffer[start : start + size]), ptr_ptr, size_ptr)

    @hostcall("proxy_get_buffer_status", "iii")
    def _proxy_get_buffer_status(self, kind: int, size_ptr: int, flags_ptr: int) -> int:
        if kind > MAX_BUFFERTYPE:
            return Status.BAD_ARGUMENT
        buffer = self._buffer(kind)
        if buffer is None:
            return Status.NOT_FOUND
        self._write_u32(size_ptr, len(buffer))
        self._write_u32(flags_ptr, 0)
        return Status.OK

    @hostcall("proxy_set_buffer_bytes", "iiiii")
    def _proxy_set_buffer_bytes(
        self, kind: int, start: int, size: int, ptr: int, length: int
    ) -> int:
        """Envoy's Buffer::copyFrom: start=0 drains ``size`` bytes then prepends; start at/after
        the end appends; anything else is BAD_ARGUMENT. Other buffers are read-only."""
        if kind > MAX_BUFFERTYPE:
            return Status.BAD_ARGUMENT
        data = self._read(ptr, length)
        buffer = self._buffer(kind)
        if not isinstance(buffer, bytearray):
            if kind in (BufferType.REQUEST_BODY, BufferType.RESPONSE_BODY):
                return self._warn(
                    Status.NOT_FOUND,
                    f"proxy_set_buffer_bytes({BufferType(kind).name}) outside a body callback",
                )
            return self._warn(
                Status.BAD_ARGUMENT, f"proxy_set_buffer_bytes({kind}) on a read-only buffer"
            )
        if start == 0:
            del buffer[:size]
            buffer[0:0] = data
        elif start >= len(buffer):
            buffer += data
        else:
            return self._warn(
                Status.BAD_ARGUMENT,
                f"proxy_set_buffer_bytes start={start} size={size} inside the buffer",
            )
        return Status.OK

    # -- header maps ---------------------------------------------------------------------------
    def _map(self, kind: int, mutable: bool) -> HeaderMap | None:
        """Envoy's getMap (mutable) / getConstMap: None when the map is not reachable now."""
        if kind in (MapType.HTTP_CALL_RESPONSE_HEADERS, MapType.HTTP_CALL_RESPONSE_TRAILERS):
            if mutable or self._http_response is None:
                return None
            call_headers, _, call_trailers = self._http_response
            return call_headers if kind == MapType.HTTP_CALL_RESPONSE_HEADERS else call_trailers
        stream = self._stream()
        if stream is None or kind > MapType.RESPONSE_TRAILERS:
            return None
        side = (
            stream._req
            if kind in (MapType.REQUEST_HEADERS, MapType.REQUEST_TRAILERS)
            else stream._resp
        )
        headers = kind in (MapType.REQUEST_HEADERS, MapType.RESPONSE_HEADERS)
        if not mutable and stream._log_phase:
            if kind == MapType.REQUEST_TRAILERS:
                return None
            return side.headers if headers else side.trailers
        if headers:
            return side.headers if side.headers_live else None
        if not side.trailers_live and mutable and side.body is not None and side.body_eos:
            side.trailers = side.trailers if side.trailers is not None else HeaderMap()
            side.trailers_live = True  # Envoy's addDecodedTrailers/addEncodedTrailers
        return side.trailers if side.trailers_live else None

    def _unavailable(self, fn: str, kind: int) -> int:
        stream = self._stream()
        status = (
            Status.NOT_FOUND if stream is not None and stream._log_phase else Status.BAD_ARGUMENT
        )
        name = MapType(kind).name if kind <= MAX_MAPTYPE else str(kind)
        return self._warn(
            status, f"{fn}({name}) while that map is not available (context {self._ctx().id})"
        )

    @hostcall("proxy_get_header_map_value", "iiiii")
    def _proxy_get_header_map_value(
        self, kind: int, kptr: int, klen: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        if kind > MAX_MAPTYPE:
            return Status.BAD_ARGUMENT
        key = text_of(self._read(kptr, klen))
        headers = self._map(kind, mutable=False)
        if headers is None:
            return self._unavailable("proxy_get_header_map_value", kind)
        value = headers.get(key)
        if value is None:
            return Status.NOT_FOUND
        return self._copy_out(bytes_of(value), ptr_ptr, size_ptr)

    def _mutate(self, fn: str, kind: int, op: Callable[[HeaderMap], None]) -> int:
        if kind > MAX_MAPTYPE:
            return Status.BAD_ARGUMENT
        headers = self._map(kind, mutable=True)
        if headers is None:
            return self._unavailable(fn, kind)
        op(headers)
        return Status.OK

    @hostcall("proxy_add_header_map_value", "iiiii")
    def _proxy_add_header_map_value(
        self, kind: int, kptr: int, klen: int, vptr: int, vlen: int
    ) -> int:
        key, value = text_of(self._read(kptr, klen)), text_of(self._read(vptr, vlen))
        return self._mutate("proxy_add_header_map_value", kind, lambda h: h.add(key, value))

    @hostcall("proxy_replace_header_map_value", "iiiii")
    def _proxy_replace_header_map_value(
        self, kind: int, kptr: int, klen: int, vptr: int, vlen: int
    ) -> int:
        key, value = text_of(self._read(kptr, klen)), text_of(self._read(vptr, vlen))
        return self._mutate("proxy_replace_header_map_value", kind, lambda h: h.replace(key, value))

    @hostcall("proxy_remove_header_map_value", "iii")
    def _proxy_remove_header_map_value(self, kind: int, kptr: int, klen: int) -> int:
        key = text_of(self._read(kptr, klen))
        return self._mutate("proxy_remove_header_map_value", kind, lambda h: h.remove(key))

    @hostcall("proxy_get_header_map_pairs", "iii")
    def _proxy_get_header_map_pairs(self, kind: int, ptr_ptr: int, size_ptr: int) -> int:
        if kind > MAX_MAPTYPE:
            return Status.BAD_ARGUMENT
        headers = self._map(kind, mutable=False)
        if headers is None or len(headers) == 0:  # Envoy: an empty map is (0, 0)
            return self._copy_out(b"", ptr_ptr, size_ptr)
        return self._copy_out(serialize_header_map(headers), ptr_ptr, size_ptr)

    @hostcall("proxy_set_header_map_pairs", "iii")
    def _proxy_set_header_map_pairs(self, kind: int, ptr: int, size: int) -> int:
        pairs = self._decode_pairs("proxy_set_header_map_pairs", self._read(ptr, size))

        def set_all(headers: HeaderMap) -> None:
            headers._pairs.clear()
            for key, value in pairs:
                headers.add(key, value)

        return self._mutate("proxy_set_header_map_pairs", kind, set_all)

    @hostcall("proxy_get_header_map_size", "ii")
    def _proxy_get_header_map_size(self, kind: int, ret: int) -> int:
        if kind > MAX_MAPTYPE:
            return Status.BAD_ARGUMENT
        headers = self._map(kind, mutable=True)
        if headers is None:
            return self._unavailable("proxy_get_header_map_size", kind)
        self._write_u32(ret, headers.byte_size())
        return Status.OK
