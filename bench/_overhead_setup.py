"""bench/overhead.py's fixed inputs: the request and reply it sends, and the Envoy bootstraps
and filter config it compares (kept apart so the measurement and report read on their own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import _harness as h
from tokenlimit.model import FilterConfig, parse_filter_config
from tokenlimit.render.envoy import (
    FILTER_NAME,
    HCM_TYPE,
    ROUTER_TYPE,
    EnvoyOptions,
    InlineFilter,
    Upstream,
    bootstrap,
    filter_typed_config,
)

KEYS = [f"bench-key-{i}" for i in range(8)]
PROMPT_TOKENS, COMPLETION_TOKENS = 52, 118
BUDGET_PER_MINUTE = 10**15  # never reached: every request is admitted
WARMUP_S = 2.0
BUFFER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"

REQUEST_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a concise assistant for a support team."},
            {
                "role": "user",
                "content": "Summarise the customer's message in two sentences and suggest a "
                "polite reply: 'My invoice for October lists the Pro plan twice, and I was "
                "charged for both. Can you refund the duplicate charge?'",
            },
        ],
        "max_tokens": 256,
        "temperature": 0.2,
    },
    separators=(",", ":"),
)

RESPONSE_BODY = json.dumps(
    {
        "id": "chatcmpl-AQ3dNbEnChMaRkOvErHeAd0001",
        "object": "chat.completion",
        "created": 1731000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "The customer was billed twice for the Pro plan on the October "
                    "invoice and asks for a refund of the duplicate charge. Suggested reply: "
                    "\"Thank you for pointing this out — I'm sorry for the double charge. I have "
                    "refunded the duplicate Pro plan payment; it will reach your account within "
                    '5 to 10 business days, and a corrected invoice is on its way."',
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_0ba0d124f1",
    },
    separators=(",", ":"),
)


# --- configs ---------------------------------------------------------------------------------


# The same exchange streamed (`overhead.py --stream`, `instructions.py`'s streamed rows): the
# request asks for a stream and no usage, the answer is OpenAI's chunk stream with the
# usage-only event the gateway's include_usage brings (hidden from this client).
STREAM_REQUEST_BODY = json.dumps(
    {**json.loads(REQUEST_BODY), "stream": True}, separators=(",", ":")
)
# The answer's words as OpenAI streams them, one or a few tokens an event.
STREAM_PIECES = (
    "The customer",
    " was billed",
    " twice for",
    " the Pro plan",
    " on the October invoice",
    " and asks",
    " for a refund",
    " of the duplicate",
    " charge.",
    " Suggested reply:",
    ' "Thank you',
    " for pointing",
    " this out",
    " \u2014 I'm sorry",
    " for the double charge.",
    " I have refunded",
    " the duplicate payment;",
    ' a corrected invoice is on its way."',
)


def stream_events() -> bytes:
    """OpenAI's chat completion chunks (as its API writes them): a role chunk, a content chunk
    per piece, the finish chunk, then the usage-only chunk include_usage adds, and [DONE]."""
    head = (
        '{"id":"chatcmpl-AQ3dNbEnChMaRkOvErHeAd0001","object":"chat.completion.chunk",'
        '"created":1731000000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default",'
        '"system_fingerprint":"fp_0ba0d124f1","choices":'
    )

    def chunk(delta: str, finish: str = "null") -> str:
        choice = f'[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]'
        return f'data: {head}{choice},"usage":null}}\n\n'

    events = [chunk('{"role":"assistant","content":"","refusal":null}')]
    events += [
        chunk(json.dumps({"content": piece}, separators=(",", ":"))) for piece in STREAM_PIECES
    ]
    events.append(chunk("{}", '"stop"'))
    usage = (
        f'{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":{COMPLETION_TOKENS},'
        f'"total_tokens":{PROMPT_TOKENS + COMPLETION_TOKENS}}}'
    )
    events.append(f'data: {head}[],"usage":{usage}}}\n\n')
    events.append("data: [DONE]\n\n")
    return "".join(events).encode()


STREAM_BODY = stream_events()


def upstream_bootstrap(listen_port: int, admin_port: int, stream: bool = False) -> dict[str, Any]:
    """An Envoy that answers every request with RESPONSE_BODY (STREAM_BODY, as one SSE write,
    with `stream`), keeping connections alive."""
    answer = STREAM_BODY.decode() if stream else RESPONSE_BODY
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "upstream",
        "route_config": {
            "name": "upstream",
            "max_direct_response_body_size_bytes": 64 * 1024,  # the stream is 6.4 KB
            "virtual_hosts": [
                {
                    "name": "llm",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {
                                "status": 200,
                                "body": {"inline_string": answer},
                            },
                        }
                    ],
                    "response_headers_to_add": [
                        {
                            "header": {
                                "key": "content-type",
                                "value": "text/event-stream" if stream else "application/json",
                            },
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        }
                    ],
                }
            ],
        },
        "http_filters": [
            # A direct response sent before the request body is read makes Envoy close an
            # HTTP/1.1 connection; reading the body first keeps the gateway's pool warm.
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {"@type": BUFFER_TYPE, "max_request_bytes": 1 << 20},
            },
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "upstream",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": listen_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


# Issue 17: each feature switched on over the plain per-key rule, to state what it costs.
# Nothing here is ever exhausted: each measures the feature's bookkeeping on admitted requests
# (cache: every request after a key's first is a hit, served without the upstream).
FEATURES: dict[str, dict[str, Any]] = {
    "model": {"item": {"per_model": True}},  # a model-aware item: the body is held and read
    "warn": {"rule": {"warn_at": 0.8}},
    "wait": {
        "rule": {
            "when_exhausted": {"action": "wait", "max_wait_ms": 1000, "max_queued": 1000},
            "pace_above": 0.85,
            "priority": {"header": "x-priority", "reserved": {"high": 0.2}},
        }
    },
    "cache": {"rule": {"cache": {"ttl_seconds": 60}}},
}


def filter_config(
    admission: str, *, idle: bool = False, feature: str | None = None
) -> FilterConfig:
    """A per-key budget no request reaches; `idle`: keyed on a header no request carries;
    `feature`: one of FEATURES switched on."""
    item: dict[str, Any] = (
        {"limit_by_header": "x-bench-never-sent", "limit_keys": [{"key": "x"}]}
        if idle
        else {"limit_by_per_header": "x-api-key", "limit_keys": [{"key": "*"}]}
    )
    item["limit_keys"][0]["token_per_minute"] = BUDGET_PER_MINUTE
    patch = FEATURES[feature] if feature else {}
    item.update(patch.get("item", {}))
    rule: dict[str, Any] = {"rule_name": "bench-overhead", "admission": admission}
    rule.update(patch.get("rule", {}))
    return parse_filter_config({**rule, "rule_items": [item]})


def gateway_bootstrap(
    upstream_url: str,
    wasm: Path,
    cfg: FilterConfig | None,
    listen: int,
    admin: int,
    bridge: Upstream | None = None,  # overhead.py --redis: the bridge cluster
) -> dict[str, Any]:
    """The project's own bootstrap with the filter inline, or the same minus the filter."""
    # The filter entry is rendered in both and dropped from one, so nothing else can differ.
    placeholder = cfg or filter_config("postpaid")
    doc = bootstrap(
        EnvoyOptions(
            upstream=Upstream.parse(upstream_url),
            filter=InlineFilter(filter_typed_config(placeholder, str(wasm))),
            listen_port=listen,
            admin_port=admin,
            bridge=bridge,
        )
    )
    if cfg is None:
        hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        chain = hcm["typed_config"]["http_filters"]
        hcm["typed_config"]["http_filters"] = [f for f in chain if f["name"] != FILTER_NAME]
        assert len(hcm["typed_config"]["http_filters"]) == len(chain) - 1
    return doc


def wrk_script(path: Path, request_path: str, method: str = "POST", stream: bool = False) -> Path:
    """wrk cycling the API keys; POST sends the chat body (STREAM_REQUEST_BODY with `stream`),
    GET (issue 17's GET path) none."""
    if method == "GET":
        headers = ", ".join(
            f'wrk.format("GET", {h.lua_string(request_path)}, {{["x-api-key"] = "{k}"}})'
            for k in KEYS
        )
    else:
        headers = ", ".join(
            f'wrk.format("POST", {h.lua_string(request_path)}, '
            f'{{["content-type"] = "application/json", ["x-api-key"] = "{k}"}}, body)'
            for k in KEYS
        )
    path.write_text(
        f"local body = {h.lua_string(STREAM_REQUEST_BODY if stream else REQUEST_BODY)}\n"
        "local requests = {}\n"
        "local i = 0\n"
        f"init = function(args)\n  requests = {{ {headers} }}\nend\n"
        "request = function()\n  i = i % #requests + 1\n  return requests[i]\nend\n" + h.WRK_DONE,
        encoding="utf-8",
    )
    return path


def build_bench_filter(work: Path, name: str) -> Path:
    """bench/<name>.zig built into `work`: `trivial_filter` (does nothing) or `floor_filter`
    (only the host calls a token limiter cannot do without)."""
    out = work / f"{name}.wasm"
    source = Path(__file__).resolve().parent / f"{name}.zig"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ziglang",
            "build-exe",
            str(source),
            "-target",
            "wasm32-freestanding",
            "-fno-entry",
            "-rdynamic",
            "-O",
            "ReleaseSmall",
            f"-femit-bin={out}",
        ],
        check=True,
        cwd=work,
    )
    return out
