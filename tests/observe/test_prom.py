"""Reading Envoy's stats: labelled and unlabelled names, several Envoys summed, one down."""

from __future__ import annotations

from observe.servers import FakeEnvoy
from tokenlimit.dev.process import free_port
from tokenlimit.observe import prom


def test_several_envoys_are_summed_and_one_that_is_down_is_named() -> None:
    a, b = FakeEnvoy(), FakeEnvoy()
    try:
        # a: a filter without labels (rule *, model none); b: one with labels, which also
        # keeps the unlabelled twins of its counts (read once, not twice).
        a.add("tokenlimit_requests_allowed", 5)
        a.add("tokenlimit_requests_rejected", 2)
        a.add("tokenlimit_tokens_charged", 40)
        b.add('tokenlimit_requests{rule="chat",model="gpt-4o",outcome="allowed"}', 7)
        b.add("tokenlimit_requests_allowed", 7)
        b.add('tokenlimit_cost_microusd{rule="chat",model="gpt-4o"}', 1_500)
        b.gauges["tokenlimit_redis_circuit_open"] = 1
        down = f"http://127.0.0.1:{free_port()}"
        stats, errors = prom.read([a.admin_url, b.admin_url, down])
    finally:
        a.served.close()
        b.served.close()
    assert stats.requests == {
        ("chat", "gpt-4o", "allowed"): 7,
        (prom.ALL_RULES, prom.NO_MODEL, "allowed"): 5,
        (prom.ALL_RULES, prom.NO_MODEL, "rejected"): 2,
    }
    assert stats.tokens == {(prom.ALL_RULES, prom.NO_MODEL): 40}
    assert stats.cost_microusd == {("chat", "gpt-4o"): 1_500}
    assert stats.redis_circuit_open == 1  # the worst Envoy's view, not a sum
    assert stats.rules() == [prom.ALL_RULES, "chat"] and stats.models() == ["gpt-4o", "none"]
    (error,) = errors
    assert error.startswith(f"cannot read {down}/stats/prometheus: ")
