"""Mock LLM upstream: deterministic OpenAI / Azure / Anthropic / Gemini answers.

Used by ``tokenlimit up --upstream mock``, the demo and the test suites. It speaks
each provider's exact response shape (JSON and SSE) so the filter's usage parsers
are exercised against realistic bytes, and it can be told per request, through
request headers, how many tokens to report and how to misbehave.

Run it (``python -m tokenlimit.dev.mockllm`` takes the same options)::

    tokenlimit mock-llm --port 8000 [--host 127.0.0.1] [--name primary]

It prints ``mock-llm listening on http://HOST:PORT`` (flushed) once it accepts
connections (with ``--port 0`` the line carries the port actually bound) and stops
cleanly on SIGINT / SIGTERM. In-process: ``await start(host, port)`` (returns an
``AppRunner``; see :func:`runner_url`), or ``start_in_thread()`` for synchronous code.

Dialects (chosen by path, POST only)
------------------------------------
==============================================================  ===========================
path                                                            dialect
==============================================================  ===========================
``/v1/chat/completions``, any path ending ``/chat/completions``  OpenAI Chat Completions
(vLLM, Ollama, Groq, OpenRouter, ...)
``/openai/deployments/{deployment}/chat/completions``            Azure OpenAI (same shape,
                                                                 plus ``prompt_filter_results``;
                                                                 its first stream chunk has
                                                                 ``"choices": []`` and no usage)
``/v1/responses`` (any path ending ``/responses``)               OpenAI Responses API
``/v1/messages``                                                 Anthropic Messages
``/v1beta/models/{model}:generateContent``                       Gemini (also ``/v1/models/...``
``/v1beta/models/{model}:streamGenerateContent?alt=sse``         and Vertex ``/v1/projects/...
                                                                 /publishers/google/models/...``)
==============================================================  ===========================

Streaming is requested as the provider does it: ``"stream": true`` in the body
(OpenAI, Azure, Responses, Anthropic) or the ``:streamGenerateContent`` method
(Gemini; SSE with ``?alt=sse``, otherwise a streamed JSON array).

Usage numbers reported (P, C, K, W from the headers below):

* OpenAI chat:  ``usage.prompt_tokens=P, completion_tokens=C, total_tokens=P+C,
  prompt_tokens_details.cached_tokens=K``. Stream: the usage chunk
  (``"choices": []``) is sent only if the request has
  ``"stream_options": {"include_usage": true}``; then every other chunk carries
  ``"usage": null``, as OpenAI does. The stream ends ``data: [DONE]``.
* Responses:    ``usage.input_tokens=P, output_tokens=C, total_tokens=P+C,
  input_tokens_details.cached_tokens=K``; streaming: ``response.created`` ...
  ``response.output_text.delta`` ... ``response.completed`` (``response.usage``).
* Anthropic:    ``usage.input_tokens=P, output_tokens=C, cache_read_input_tokens=K,
  cache_creation_input_tokens=W``; streaming: ``message_start`` (usage with
  ``output_tokens: 1``), ``content_block_start``, ``ping``, ``content_block_delta`` xN,
  ``content_block_stop``, ``message_delta`` (``usage.output_tokens=C``), ``message_stop``.
* Gemini:       ``usageMetadata.promptTokenCount=P, candidatesTokenCount=C,
  totalTokenCount=P+C``, ``cachedContentTokenCount=K`` only when K > 0. SSE events are
  ``data: {...}\\r\\n\\r\\n`` (CRLF, as Google sends them); usageMetadata is on the last
  chunk only.

The reported prompt/input count is always exactly P in every dialect (the cached and
cache-creation counts are reported beside it, never subtracted from it).

Control headers (request headers; the contract the tests rely on)
-----------------------------------------------------------------
================================  =============================================================
header                            effect (default)
================================  =============================================================
``x-mock-prompt-tokens: P``       prompt/input tokens reported (``ceil(len(body)/4)``, min 1)
``x-mock-completion-tokens: C``   completion/output tokens reported; the text has C words
                                  (request's ``max_completion_tokens`` / ``max_tokens`` /
                                  ``max_output_tokens`` / ``generationConfig.maxOutputTokens``
                                  if given, else 16)
``x-mock-cached-tokens: K``       cached prompt tokens (0)
``x-mock-cache-creation-tokens``  Anthropic ``cache_creation_input_tokens`` (0)
``x-mock-status: S``              reply with status S and the provider's error JSON
                                  (e.g. 429, 500, 503, 529), whatever the body; S < 400
                                  just sets the status of the normal reply
``x-mock-retry-after: N``         set ``Retry-After: N`` on the reply (any status)
``x-mock-delay-ms: D``            sleep D ms before the reply headers (0)
``x-mock-stream-interval-ms: I``  sleep I ms between stream writes (0)
``x-mock-chunk-bytes: B``         re-split the response body into writes of exactly B bytes
                                  (the last may be shorter), each flushed separately with a
                                  ~1 ms pause, so SSE events / JSON straddle body chunks. The
                                  bytes are identical to the unsplit reply. Works for JSON too
                                  (then sent chunked, without Content-Length).
``x-mock-no-usage: 1``            omit usage entirely (no usage chunk, no usage fields)
``x-mock-abort-after-bytes: N``   send only the first N body bytes, then drop the connection
                                  (simulates an upstream reset mid-stream; JSON replies keep
                                  their full Content-Length so the truncation is visible)
``x-mock-compress: 1``            compress the reply as a real upstream does when the request's
                                  ``Accept-Encoding`` allows it (zstd, br, gzip, deflate, in that
                                  order of preference; ``Content-Encoding`` set); identity
                                  otherwise
================================  =============================================================

A malformed control header, an invalid JSON body or a non-object body gets a 400 with
the dialect's error JSON (OpenAI: ``{"error": {"message", "type":
"invalid_request_error", "param", "code"}}``; Anthropic and Gemini use their own shapes,
which also carry ``error.message``). An unknown path is a 404 and a wrong method a 405,
both OpenAI-shaped.

Every response carries ``x-mock-upstream: NAME`` (``--name`` / ``make_app(name=...)``,
default ``mock``). ``GET /mock/stats`` returns ``{"name", "requests", "by_path",
"by_status", "last_request": {"method", "path", "query", "headers", "body"}}`` counting
every request except ``/mock/*`` and ``/healthz``; ``POST /mock/reset`` clears it;
``GET /healthz`` answers 200. The mock never sends ``x-ratelimit-*`` headers itself, so
any such header seen by a client came from the gateway.
"""

from __future__ import annotations

from tokenlimit.dev.mockllm.common import MAX_STREAM_EVENTS, completion_text
from tokenlimit.dev.mockllm.server import (
    RunningMock,
    make_app,
    run,
    runner_url,
    start,
    start_in_thread,
)

__all__ = [
    "MAX_STREAM_EVENTS",
    "RunningMock",
    "completion_text",
    "make_app",
    "run",
    "runner_url",
    "start",
    "start_in_thread",
]
