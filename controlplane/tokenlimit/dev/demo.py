"""`make demo`: a real Envoy with the filter in front of the mock LLM, and a short burst of
requests from two API keys, printed so a newcomer sees who was admitted and who got 429.

Run with `python -m tokenlimit.dev.demo`; it starts and stops everything itself.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from tokenlimit.apply import envoy_admin
from tokenlimit.dev.gateway import Gateway, GatewayError
from tokenlimit.model import FilterConfig, parse_filter_config

BUDGET_TOKENS_PER_MINUTE = 300
PROMPT_TOKENS = 20
COMPLETION_TOKENS = 80
REQUESTS_PER_KEY = 5
DEMO_SECONDS = 10  # the burst takes well under this
SHOWN_HEADERS = (
    "retry-after",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def demo_policy() -> FilterConfig:
    return parse_filter_config(
        {
            "rule_name": "demo",
            "rule_items": [
                {
                    "limit_by_per_header": "x-api-key",
                    "limit_keys": [{"key": "*", "token_per_minute": BUDGET_TOKENS_PER_MINUTE}],
                }
            ],
            "show_limit_headers": True,
        }
    )


@dataclass(frozen=True)
class Outcome:
    api_key: str
    status: int
    headers: dict[str, str]
    body: str


def send(gateway: Gateway, api_key: str) -> Outcome:
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "Hello!"}]})
    request = urllib.request.Request(
        gateway.listen_url + "/v1/chat/completions",
        data=body.encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": api_key,
            "x-mock-prompt-tokens": str(PROMPT_TOKENS),
            "x-mock-completion-tokens": str(COMPLETION_TOKENS),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = json.loads(response.read())
            usage = payload.get("usage", {})
            text = f"usage {usage.get('prompt_tokens')}+{usage.get('completion_tokens')} tokens"
            return Outcome(api_key, response.status, dict(response.headers.items()), text)
    except urllib.error.HTTPError as refused:
        text = refused.read().decode(errors="replace").strip()
        return Outcome(api_key, refused.code, dict(refused.headers.items()), text)


def describe(outcome: Outcome) -> str:
    headers = {k.lower(): v for k, v in outcome.headers.items()}
    shown = "  ".join(f"{name}: {headers[name]}" for name in SHOWN_HEADERS if name in headers)
    verdict = "admitted" if outcome.status == 200 else "REJECTED"
    return f"  {outcome.api_key:<6} {outcome.status} {verdict:<9} {outcome.body:<28} {shown}"


def main() -> int:
    print(
        f"Starting Envoy + tokenlimit filter + mock LLM: each API key may spend "
        f"{BUDGET_TOKENS_PER_MINUTE} tokens a minute; every answer costs "
        f"{PROMPT_TOKENS + COMPLETION_TOKENS} tokens."
    )
    try:
        with Gateway(demo_policy(), concurrency=2) as gateway:
            print(f"Gateway ready at {gateway.listen_url} (admin {gateway.admin_url}).")
            into_minute = time.time() % 60
            if into_minute > 60 - DEMO_SECONDS:
                # Budgets reset at every whole minute: run the burst inside one window.
                wait_s = 60 - into_minute + 0.5
                print(f"Waiting {wait_s:.0f} s for the next minute window to start.")
                time.sleep(wait_s)
            print()
            for round_number in range(REQUESTS_PER_KEY):
                for api_key in ("alice", "bob") if round_number < 2 else ("alice",):
                    print(describe(send(gateway, api_key)))
            print("\n  bob was limited separately: one more request from bob")
            print(describe(send(gateway, "bob")))
            stats = envoy_admin.counters(gateway.admin_url)
            print(
                "\nEnvoy counters: "
                f"allowed={stats.get('wasmcustom.tokenlimit.requests_allowed', 0)} "
                f"rejected={stats.get('wasmcustom.tokenlimit.requests_rejected', 0)} "
                f"tokens_charged={stats.get('wasmcustom.tokenlimit.tokens_charged', 0)}"
            )
            access_log = [line for line in gateway.logs().stdout.splitlines() if line.strip()]
            print("Last access-log line:", access_log[-1] if access_log else "(none yet)")
        print("\nStopped Envoy and the mock upstream.")
        return 0
    except (GatewayError, envoy_admin.EnvoyAdminError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
