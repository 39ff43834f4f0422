"""validate = enforce: the model loads a bare config exactly when the filter does.

The contract vectors (contract/config.json) and many documents derived from them are judged by
both halves: the model (`tokenlimit validate`) and the real filter (both builds, through the
test host). A config the model accepts but the filter refuses would pass `validate` and then be
dropped by the gateway; one the filter accepts and the model refuses could never be deployed.
Both must also name the same field, and warn of the same ignored fields.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.config_needs import judged_vectors
from support.proxywasm_host import Host
from support.proxywasm_host.abi import LogLevel
from tokenlimit.model import ConfigInvalid
from tokenlimit.model.filter_config import parse_filter_config_with_warnings

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "contract" / "config.json").read_text())
# Values a field may be replaced with: every JSON type, the edges of the bounds.
REPLACEMENTS: list[Any] = [
    None,
    True,
    0,
    -1,
    1,
    7,
    "7",
    1.5,
    "",
    "x",
    "*",
    "a:b",
    "专用",
    "from-remote-addr",
    "r" * 70,
    "h" * 129,
    [],
    ["x"],
    {},
    10**16,
]
_IGNORED = re.compile(r"config: ignored fields, as Higress ignores them: (.*)$")


def model_verdict(config: object) -> tuple[bool, list[str], list[str]]:
    """(accepted, refused fields, ignored field paths): the model lists every problem."""
    try:
        _, warnings = parse_filter_config_with_warnings(config)
    except ConfigInvalid as refused:
        return False, [p.path for p in refused.problems], []
    ignored = [w.path for w in warnings if "top-level rule ignored" not in w.reason]
    return True, "", ignored


def filter_verdict(host: Host, config: object) -> tuple[bool, list[str], list[str]]:
    host.logs.clear()
    accepted = host.configure(json.dumps(config, ensure_ascii=False))
    if not accepted:
        errors = [m for m in host.log_messages(LogLevel.ERROR) if m.startswith("invalid config")]
        assert len(errors) == 1, host.log_messages()
        return False, [errors[0].removeprefix("invalid config: ")], []
    ignored: list[str] = []
    for message in host.log_messages(LogLevel.WARN):
        found = _IGNORED.search(message)
        if found:
            ignored = found.group(1).split(", ")
    return True, [], ignored


def assert_agree(host: Host, config: object, name: str) -> None:
    model = model_verdict(config)
    enforced = filter_verdict(host, config)
    assert model[0] == enforced[0], (name, config, model, enforced)
    if model[0]:
        assert sorted(model[2]) == sorted(enforced[2]), (name, config, model, enforced)
    else:
        # The filter stops at one `FIELD: REASON` (or a bare reason for the document); the
        # model lists every problem, that field among them.
        line = enforced[1][0]
        named = any(line.startswith(f"{path}: ") for path in model[1] if path)
        assert named or "" in model[1], (name, config, model, enforced)


def leaves(document: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value in the document (objects and arrays included)."""
    if at:
        yield at
    if isinstance(document, dict):
        for key, value in document.items():
            yield from leaves(value, (*at, key))
    elif isinstance(document, list):
        for index, value in enumerate(document[:3]):
            yield from leaves(value, (*at, index))


def replaced(document: Any, at: tuple[Any, ...], value: Any) -> Any:
    changed = copy.deepcopy(document)
    target = changed
    for part in at[:-1]:
        target = target[part]
    target[at[-1]] = value
    return changed


def derived(seed: int, per_vector: int, vectors: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    """Documents one change away from a valid vector: a field replaced or removed."""
    rng = random.Random(seed)
    for vector in vectors:
        if not vector["valid"]:
            continue
        paths = list(leaves(vector["config"]))
        for _ in range(min(per_vector, len(paths))):
            at = rng.choice(paths)
            if rng.random() < 0.2:
                changed = copy.deepcopy(vector["config"])
                target = changed
                for part in at[:-1]:
                    target = target[part]
                del target[at[-1]]
            else:
                changed = replaced(vector["config"], at, rng.choice(REPLACEMENTS))
            yield f"{vector['name']} with {at} changed", changed


@pytest.fixture(scope="module", params=["tokenlimit.wasm", "tokenlimit-higress.wasm"])
def host(request: pytest.FixtureRequest, filter_wasm: Path, higress_wasm: Path) -> Host:
    return Host(filter_wasm if request.param == "tokenlimit.wasm" else higress_wasm)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_the_model_and_the_filter_judge_every_vector_alike(
    host: Host, vector: dict[str, Any]
) -> None:
    assert model_verdict(vector["config"])[0] == vector["valid"]
    # A vector marked `needs` waits for fields the filter ignores today (reported as skipped).
    if list(judged_vectors(host, [vector])):
        assert_agree(host, vector["config"], vector["name"])


def test_the_model_and_the_filter_agree_one_change_away_from_every_vector(host: Host) -> None:
    count = 0
    for name, config in derived(
        seed=11, per_vector=12, vectors=list(judged_vectors(host, VECTORS))
    ):
        assert_agree(host, config, name)
        count += 1
    assert count > 300


def test_a_config_the_filter_cannot_count_is_refused_by_validate(host: Host) -> None:
    # ISSUE-10 item 7: a 64-byte rule name and a 128-byte header name made every counter name
    # too long; the filter admitted every request uncounted and `validate` said nothing.
    config = {
        "rule_name": "r" * 64,
        "rule_items": [
            {"limit_by_per_header": "h" * 128, "limit_keys": [{"key": "*", "token_per_day": 1}]}
        ],
    }
    assert model_verdict(config)[:2] == (False, ["rule_items[0].limit_by_per_header"])
    assert filter_verdict(host, config)[0] is False
    config["rule_items"][0]["limit_by_per_header"] = "h" * 100  # fits: loads in both
    assert model_verdict(config)[0] and filter_verdict(host, config)[0]
