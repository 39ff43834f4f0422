"""Near the limit (issue 13) in the control plane: a policy spells the fields in camelCase and
renders them into the filter's snake_case JSON; refusals name the field in the document's own
spelling. (Bounds: test_limits.py; what both halves refuse: contract/config.json.)"""

from __future__ import annotations

from typing import Any

import pytest
from tokenlimit.model import ConfigInvalid, filter_json, parse_policy, policy_filter_config


def policy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tokenlimit.io/v1alpha1",
        "kind": "TokenRateLimitPolicy",
        "metadata": {"name": "p"},
        "spec": {"ruleName": "r", "globalThreshold": {"tokenPerMinute": 100}, **spec},
    }


def test_a_policy_renders_the_fields_the_filter_reads() -> None:
    parsed = parse_policy(
        policy(
            whenExhausted={"action": "wait", "maxWaitMs": 300, "maxQueued": 5},
            paceAbove=0.9,
            priority={"header": "x-priority", "reserved": {"high": 0.2}},
        )
    )
    assert filter_json(policy_filter_config(parsed)) == (
        '{"rule_name":"r","global_threshold":{"token_per_minute":100},'
        '"when_exhausted":{"action":"wait","max_wait_ms":300,"max_queued":5},'
        '"pace_above":0.9,"priority":{"header":"x-priority","reserved":{"high":0.2}}}'
    )


def test_a_refusal_names_the_field_as_the_policy_spells_it() -> None:
    with pytest.raises(ConfigInvalid) as refused:
        parse_policy(policy(whenExhausted={"action": "downgrade"}))
    assert "spec.whenExhausted.model: is required with action downgrade" in str(refused.value)
    with pytest.raises(ConfigInvalid) as refused:
        parse_policy(policy(whenExhausted={"max_wait_ms": 5}))
    assert "spec.whenExhausted.max_wait_ms" in str(refused.value)
