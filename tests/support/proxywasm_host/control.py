"""Host functions that steer a stream or a context: continue, close, local reply, effective
context, done, call status, foreign functions and properties."""

from __future__ import annotations

from support.proxywasm_host.abi import (
    MAX_STREAMTYPE,
    Status,
    StreamType,
    bytes_of,
    hostcall,
    text_of,
)
from support.proxywasm_host.stream import HttpStream, LocalResponse
from support.proxywasm_host.vm import VmBase


class ControlCalls(VmBase):
    """Envoy defers what these calls do (continue, reply, delete) until the VM call returns."""

    properties: dict[str, bytes]
    properties_set: dict[str, bytes]
    _call_status: tuple[int, str]

    @hostcall("proxy_continue_stream", "i")
    def _proxy_continue_stream(self, kind: int) -> int:
        if kind > MAX_STREAMTYPE:
            return Status.BAD_ARGUMENT
        if kind == StreamType.UPSTREAM:
            return Status.UNIMPLEMENTED
        stream = self._stream()
        if stream is None or kind == StreamType.DOWNSTREAM:
            return Status.OK
        stream.continued.append(StreamType(kind))
        side = stream._req if kind == StreamType.HTTP_REQUEST else stream._resp
        if side.paused_in == "body" and side.body is not None:
            side.last_body = bytes(side.body)  # what Envoy will forward on continue
        stream._req.forget_live()  # Envoy clears the request pointers for either direction
        self._after.append(lambda: stream._continue(side))
        return Status.OK

    @hostcall("proxy_continue_request", "")
    def _proxy_continue_request(self) -> int:
        return self._proxy_continue_stream(StreamType.HTTP_REQUEST)

    @hostcall("proxy_continue_response", "")
    def _proxy_continue_response(self) -> int:
        return self._proxy_continue_stream(StreamType.HTTP_RESPONSE)

    @hostcall("proxy_close_stream", "i")
    def _proxy_close_stream(self, kind: int) -> int:
        if kind > MAX_STREAMTYPE:
            return Status.BAD_ARGUMENT
        stream = self._stream()
        if stream is not None:
            stream.closed.append(StreamType(kind))
            if kind in (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE):

                def reset() -> None:
                    stream._req.terminated = stream._resp.terminated = True

                self._after.append(reset)
        return Status.OK

    @hostcall("proxy_send_local_response", "iiiiiiii")
    def _proxy_send_local_response(
        self,
        status: int,
        dptr: int,
        dlen: int,
        bptr: int,
        blen: int,
        hptr: int,
        hlen: int,
        grpc: int,
    ) -> int:
        details, body = text_of(self._read(dptr, dlen)), self._read(bptr, blen)
        headers = [
            (k.lower(), v)
            for k, v in self._decode_pairs("proxy_send_local_response", self._read(hptr, hlen))
        ]
        grpc_status = grpc - (1 << 32) if grpc & 0x80000000 else grpc
        self._stop_iteration = True  # Envoy: stopNextIteration(true)
        stream = self._stream()
        if stream is not None:
            stream.local_responses.append(
                LocalResponse(status, details, body, headers, grpc_status)
            )
            self._after.append(stream._deliver_local_reply)
        return Status.OK

    @hostcall("proxy_set_effective_context", "i")
    def _proxy_set_effective_context(self, context_id: int) -> int:
        if context_id not in self._contexts:
            return self._warn(
                Status.BAD_ARGUMENT, f"proxy_set_effective_context({context_id}): no such context"
            )
        self._effective_ctx = context_id
        return Status.OK

    @hostcall("proxy_done", "")
    def _proxy_done(self) -> int:
        ctx = self._ctx()
        if ctx.id not in self._pending_done or not isinstance(ctx, HttpStream):
            return Status.NOT_FOUND
        self._after.append(lambda: self._delete_context(ctx))
        return Status.OK

    @hostcall("proxy_get_status", "iii")
    def _proxy_get_status(self, code_ptr: int, ptr_ptr: int, size_ptr: int) -> int:
        self._write_u32(code_ptr, self._call_status[0])
        return self._copy_out(bytes_of(self._call_status[1]), ptr_ptr, size_ptr)

    @hostcall("proxy_call_foreign_function", "iiiiii")
    def _proxy_call_foreign_function(
        self, nptr: int, nlen: int, aptr: int, alen: int, rptr: int, rlen: int
    ) -> int:
        name = text_of(self._read(nptr, nlen))
        return self._warn(
            Status.NOT_FOUND, f"proxy_call_foreign_function({name!r}): no foreign functions"
        )

    # -- properties ----------------------------------------------------------------------------
    @hostcall("proxy_get_property", "iiii")
    def _proxy_get_property(self, pptr: int, plen: int, ptr_ptr: int, size_ptr: int) -> int:
        name = ".".join(text_of(p) for p in self._read(pptr, plen).split(b"\0") if p)
        stream = self._stream()
        for source in (stream.properties_set, stream.properties) if stream is not None else ():
            if name in source:
                return self._copy_out(source[name], ptr_ptr, size_ptr)
        if name in self.properties:
            return self._copy_out(self.properties[name], ptr_ptr, size_ptr)
        return Status.NOT_FOUND

    @hostcall("proxy_set_property", "iiii")
    def _proxy_set_property(self, pptr: int, plen: int, vptr: int, vlen: int) -> int:
        name = ".".join(text_of(p) for p in self._read(pptr, plen).split(b"\0") if p)
        value = self._read(vptr, vlen)
        stream = self._stream()
        if stream is None:
            # Recorded for tests, but Envoy answers NOT_FOUND: a root context has no stream info.
            self.properties_set[name] = value
            return self._warn(Status.NOT_FOUND, f"proxy_set_property({name!r}) on the root context")
        stream.properties_set[name] = value
        return Status.OK
