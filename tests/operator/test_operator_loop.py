"""The operator's loop and controller against the in-memory API server, with recorded errors.

The clock is fake: the loop's sleeps and the watch's waits move it, so minutes of operator
time pass in milliseconds, and every retry's timing can be checked exactly (jitter is off
unless a test turns it on).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.fakekube import FakeClock, FakeKube
from support.operator_reconcile import PLUGIN, PluginRenderer
from tokenlimit.apply.kube import CONFIG_MAP, POLICY, ApiError, ObjectRef, api_error
from tokenlimit.operator.controller import PolicyController
from tokenlimit.operator.loop import Backoff, Interrupted, Loop, LoopOptions
from tokenlimit.operator.reconcile import FINALIZER, POLICY_UID_LABEL, Renderer, Settings
from tokenlimit.operator.renderers import ECDS_KEY, EnvoyEcdsRenderer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube"
CHAT = ObjectRef(POLICY, "team-a", "chat")
CHAT_ECDS = ObjectRef(CONFIG_MAP, "team-a", "chat-tokenlimit-ecds")
SETTINGS = Settings(gateway="envoy")


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def recorded_error(name: str) -> ApiError:
    """A recorded error response, parsed as the real client parses one."""
    response = recorded(name)["response"]
    body = response["body"]
    return api_error(
        response["status"], response["headers"], body if isinstance(body, str) else json.dumps(body)
    )


class Operator:
    """The fake API server, the loop and its controller, run until a fake time."""

    def __init__(
        self,
        renderer: Renderer | None = None,
        namespace: str | None = None,
        resync_s: float = 300,
        random: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.clock = FakeClock()
        self.kube = FakeKube(self.clock)
        self.until = 0.0
        self.controller = PolicyController(
            self.kube, SETTINGS, renderer or EnvoyEcdsRenderer(), self.clock.now, namespace
        )
        self.loop = Loop(
            self.kube,
            self.controller,
            self.clock,
            LoopOptions(namespace, resync_s),
            stopping=lambda: self.clock.t >= self.until,
            random=random,
        )

    def run(self, until: float) -> None:
        """Run the loop until the fake clock reads `until` (or later)."""
        self.until = until

        def stop() -> None:
            # As SIGTERM does: a watch waiting for events is interrupted.
            if self.until == until:
                raise Interrupted

        self.clock.at(until, stop)
        self.loop.run()

    def policy(self, ref: ObjectRef = CHAT) -> dict[str, Any]:
        found = self.kube.stored(ref)
        assert found is not None, ref
        return found

    def conditions(self, ref: ObjectRef = CHAT) -> dict[str, dict[str, Any]]:
        status = self.policy(ref).get("status") or {}
        return {c["type"]: c for c in status.get("conditions", [])}

    def times(self, operation: str, what: str | None = None) -> list[float]:
        return [t for t, op, w in self.kube.timeline if op == operation and what in (None, w)]


def seeded(**kwargs: Any) -> Operator:
    operator = Operator(**kwargs)
    operator.kube.seed(recorded("policy.json"))
    return operator


def set_tokens_per_minute(value: int) -> Callable[[dict[str, Any]], None]:
    def change(policy: dict[str, Any]) -> None:
        policy["spec"]["ruleItems"][0]["limitKeys"][0]["tokenPerMinute"] = value

    return change


def ecds_tokens_per_minute(operator: Operator) -> int:
    config_map = operator.kube.stored(CHAT_ECDS)
    assert config_map is not None
    ecds = yaml.safe_load(config_map["data"][ECDS_KEY])
    value = ecds["resources"][0]["typed_config"]["config"]["configuration"]["value"]
    return json.loads(value)["rule_items"][0]["limit_keys"][0]["token_per_minute"]


# --- the happy path -------------------------------------------------------------------------


def test_a_recorded_policy_is_programmed_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tokenlimit.operator")
    operator = seeded()
    operator.run(until=10)

    config_map = operator.kube.stored(CHAT_ECDS)
    assert config_map is not None
    assert (
        config_map["metadata"]["ownerReferences"][0]["uid"]
        == recorded("policy.json")["metadata"]["uid"]
    )
    assert ecds_tokens_per_minute(operator) == 300
    conditions = operator.conditions()
    assert {t: (c["status"], c["reason"]) for t, c in conditions.items()} == {
        "Accepted": ("True", "Accepted"),
        "Programmed": ("True", "Programmed"),
    }
    assert operator.policy()["status"]["observedGeneration"] == 2
    assert operator.kube.writes() == [
        ("apply", "ConfigMap team-a/chat-tokenlimit-ecds"),
        ("patch_status", "TokenRateLimitPolicy team-a/chat"),
    ]
    assert "team-a/chat generation 2: programmed (applied 1, deleted 0, status written)" in (
        caplog.messages
    )


def test_no_writes_when_nothing_changed_not_even_on_resync() -> None:
    operator = seeded(resync_s=30)
    operator.run(until=10)
    writes = operator.kube.writes()
    syncs_before = len(operator.times("get", str(CHAT)))

    operator.run(until=200)

    assert operator.kube.writes() == writes
    # Our own status write came back as a watch event and was not reconciled again, but
    # every resync was: 6 of them in 190 s.
    assert len(operator.times("get", str(CHAT))) - syncs_before == 6


def test_a_spec_edit_reaches_the_objects_and_observed_generation() -> None:
    operator = seeded()
    operator.clock.at(20, lambda: operator.kube.edit(CHAT, set_tokens_per_minute(600)))
    operator.run(until=30)

    assert ecds_tokens_per_minute(operator) == 600
    assert operator.policy()["metadata"]["generation"] == 3
    assert operator.policy()["status"]["observedGeneration"] == 3
    assert {c["observedGeneration"] for c in operator.conditions().values()} == {3}
    # The edit was acted on when it happened, not at the end of a watch.
    assert operator.times("apply")[-1] == 20


def test_an_invalid_edit_is_refused_and_the_running_config_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "tokenlimit.operator")
    operator = seeded()

    def break_it(policy: dict[str, Any]) -> None:
        policy["spec"]["ruleItems"][0]["limitKeys"][0]["tokenPerMinute"] = 0

    operator.clock.at(20, lambda: operator.kube.edit(CHAT, break_it))
    operator.run(until=30)

    assert ecds_tokens_per_minute(operator) == 300  # generation 2's config still runs
    accepted = operator.conditions()["Accepted"]
    assert (accepted["status"], accepted["reason"], accepted["observedGeneration"]) == (
        "False",
        "Invalid",
        3,
    )
    assert accepted["message"].startswith("spec.ruleItems[0].limitKeys[0].tokenPerMinute: ")
    assert operator.conditions()["Programmed"]["observedGeneration"] == 2
    assert any(
        m.startswith("team-a/chat generation 3: refused, previous objects kept: spec.ruleItems")
        for m in caplog.messages
    )


def test_a_hand_edit_of_an_owned_object_is_repaired_on_resync() -> None:
    operator = seeded(resync_s=60)

    def tamper(config_map: dict[str, Any]) -> None:
        config_map["data"][ECDS_KEY] = "resources: []\n"

    operator.clock.at(20, lambda: operator.kube.edit(CHAT_ECDS, tamper))
    operator.run(until=70)
    assert ecds_tokens_per_minute(operator) == 300
    assert operator.times("apply") == [0, 60]


def test_deleting_the_policy_garbage_collects_what_it_owns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "tokenlimit.operator")
    operator = seeded()
    operator.clock.at(20, lambda: operator.kube.remove(CHAT))
    operator.run(until=30)
    assert operator.kube.stored(CHAT) is None
    assert operator.kube.stored(CHAT_ECDS) is None
    assert "team-a/chat: deleted; owned objects are garbage-collected" in caplog.messages
    assert CHAT not in operator.loop.known


def test_objects_in_another_namespace_are_cleaned_up_through_the_finalizer() -> None:
    operator = seeded(renderer=PluginRenderer(namespace="higress-system"))
    plugin = ObjectRef(PLUGIN, "higress-system", "tokenlimit-chat")
    operator.run(until=10)
    assert operator.policy()["metadata"]["finalizers"] == [FINALIZER]
    assert operator.kube.stored(plugin) is not None

    operator.clock.at(20, lambda: operator.kube.remove(CHAT))
    operator.run(until=30)

    assert operator.kube.stored(plugin) is None
    assert operator.kube.stored(CHAT) is None  # the finalizer was removed, deletion finished


def test_an_object_it_does_not_own_is_not_taken_over() -> None:
    operator = seeded()
    operator.kube.seed(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "chat-tokenlimit-ecds", "namespace": "team-a"},
            "data": {"mine": "yes"},
        }
    )
    operator.run(until=5)
    assert operator.kube.stored(CHAT_ECDS)["data"] == {"mine": "yes"}  # type: ignore[index]
    assert operator.times("apply") == []
    programmed = operator.conditions()["Programmed"]
    assert (programmed["status"], programmed["reason"]) == ("False", "ApplyFailed")
    assert programmed["message"] == (
        "ConfigMap team-a/chat-tokenlimit-ecds already exists and is not managed by this "
        "policy: delete or rename it, or change the policy's name"
    )


# --- API errors -----------------------------------------------------------------------------


def test_status_conflict_409_is_retried_after_back_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tokenlimit.operator")
    operator = seeded()
    operator.kube.fail("patch_status", recorded_error("conflict-409.json"))
    operator.run(until=10)

    assert operator.times("patch_status") == [0, 0.5]
    assert operator.conditions()["Programmed"]["status"] == "True"
    assert (
        "team-a/chat generation 2: failed (applied 1, deleted 0): 409 Conflict: Operation "
        'cannot be fulfilled on tokenratelimitpolicies.tokenlimit.io "chat": the object has '
        "been modified; please apply your changes to the latest version and try again; "
        "retry 1 in 0.5s"
    ) in caplog.messages


def test_apply_conflict_409_is_reported_then_resolved() -> None:
    operator = seeded()
    operator.kube.fail("apply", recorded_error("apply-conflict-409.json"), times=2)
    seen: list[dict[str, Any]] = []
    operator.clock.at(1.0, lambda: seen.append(operator.conditions()["Programmed"]))
    operator.run(until=10)

    (failing,) = seen
    assert (failing["status"], failing["reason"]) == ("False", "ApplyFailed")
    assert failing["message"] == (
        "ConfigMap team-a/chat-tokenlimit-ecds: 409 Conflict: Apply failed with 1 conflict: "
        'conflict with "kubectl-edit" using extensions.higress.io/v1alpha1: .spec.priority'
    )
    assert operator.times("apply") == [0, 0.5, 1.5]
    assert operator.conditions()["Programmed"]["status"] == "True"
    # Two failures with the same message wrote the failing status once.
    assert len(operator.times("patch_status")) == 2


def test_429_waits_for_retry_after_and_sends_no_status_write() -> None:
    operator = seeded()
    operator.kube.fail("apply", recorded_error("too-many-requests-429.json"))
    operator.run(until=10)
    # Back-off alone would retry after 0.5 s; the server asked for 1 s.
    assert operator.times("apply") == [0, 1.0]
    assert operator.times("patch_status") == [1.0]


def test_500_backs_off_exponentially_up_to_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tokenlimit.operator")
    operator = seeded()
    operator.kube.fail("apply", recorded_error("internal-500.json"), times=10)
    operator.run(until=400)

    attempts = operator.times("apply")
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(attempts)]
    assert gaps == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert operator.conditions()["Programmed"]["status"] == "True"
    assert any("retry 10 in 60.0s" in m for m in caplog.messages)


def test_jitter_spreads_retries_but_stays_within_the_bounds() -> None:
    backoff = Backoff(random=lambda: 1.0)  # the most jitter there is
    delays = [backoff.delay("k") for _ in range(12)]
    assert delays[0] == pytest.approx(0.6)
    assert all(0.5 <= d <= 60 for d in delays)
    assert delays[-1] == 60
    backoff.forget("k")
    assert backoff.delay("k") == pytest.approx(0.6)


def test_retries_are_per_policy() -> None:
    operator = seeded()
    batch = copy.deepcopy(recorded("policy.json"))
    batch["metadata"].update(name="batch", uid="8d0c6a51-27e4-4c3b-9f15-0a9e3d7c6b42")
    batch["spec"]["ruleName"] = "batch"
    operator.kube.seed(batch)
    operator.kube.fail(
        "apply", recorded_error("internal-500.json"), times=3, name="chat-tokenlimit-ecds"
    )
    operator.run(until=10)
    assert operator.times("apply", "ConfigMap team-a/batch-tokenlimit-ecds") == [0]
    assert operator.times("apply", "ConfigMap team-a/chat-tokenlimit-ecds") == [0, 0.5, 1.5, 3.5]


def test_list_errors_back_off_and_never_end_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tokenlimit.operator")
    operator = seeded()
    operator.kube.fail("list", recorded_error("internal-500.json"), times=3, kind=POLICY)
    operator.run(until=10)
    assert operator.times("list", "TokenRateLimitPolicy *") == [0, 0.5, 1.5, 3.5]
    assert operator.conditions()["Programmed"]["status"] == "True"
    assert any(m.startswith("list/watch failed: 500 InternalError: ") for m in caplog.messages)


def test_410_gone_relists(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tokenlimit.operator")
    operator = seeded()

    def unrelated_write_then_compaction() -> None:
        # A write the policy watch does not see moves the store's revision past the
        # watch's resourceVersion; compaction then makes that version too old.
        operator.kube.seed(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "y"}}
        )
        operator.kube.compact()

    operator.clock.at(5, unrelated_write_then_compaction)
    operator.run(until=400)  # the first watch ends at 300 s; the next one gets 410
    assert operator.loop.lists == 2
    assert operator.times("list", "TokenRateLimitPolicy *") == [0, 300]
    assert any(
        m.startswith("watch expired (410 Expired: too old resource version")
        for m in (caplog.messages)
    )


def test_recorded_watch_stream_is_followed_then_relisted_on_410(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "tokenlimit.operator")
    operator = seeded()
    lines = (FIXTURES / "watch-policies.jsonl").read_text().splitlines()
    operator.kube.script_watch(lines)
    operator.run(until=5)

    # MODIFIED (generation 3) and ADDED (batch) were reconciled; the status-only MODIFIED
    # and the BOOKMARK were not; DELETED forgot batch; ERROR 410 listed again.
    chat_gets = operator.times("get", "TokenRateLimitPolicy team-a/chat")
    assert chat_gets == [0, 0, 0]  # list, generation-3 event, relist
    assert operator.times("get", "TokenRateLimitPolicy team-a/batch") == [0]
    assert "team-a/batch: deleted; owned objects are garbage-collected" in caplog.messages
    assert operator.loop.lists == 2
    assert ObjectRef(POLICY, "team-a", "batch") not in operator.loop.known


def test_a_dropped_watch_resumes_from_its_resource_version_without_listing() -> None:
    operator = seeded()
    operator.kube.drop_watch_after(0)
    operator.run(until=10)
    assert operator.loop.lists == 1
    watches = [w for _, op, w in operator.kube.timeline if op == "watch"]
    assert watches[:2] == [
        f"TokenRateLimitPolicy * from {watches[0].rsplit(' ', 1)[1]}",
        watches[0],
    ]
    assert operator.times("watch")[:2] == [0, 0.5]


def test_a_watch_broken_mid_stream_does_not_lose_events() -> None:
    operator = seeded()
    operator.run(until=10)
    operator.kube.drop_watch_after(1)
    operator.clock.at(20, lambda: operator.kube.edit(CHAT, set_tokens_per_minute(500)))
    operator.clock.at(20, lambda: operator.kube.edit(CHAT, set_tokens_per_minute(700)))
    operator.run(until=40)
    assert ecds_tokens_per_minute(operator) == 700
    assert operator.policy()["status"]["observedGeneration"] == 4


def test_watching_one_namespace() -> None:
    operator = seeded(namespace="team-b")
    operator.run(until=5)
    assert operator.kube.writes() == []
    assert operator.times("list", "TokenRateLimitPolicy team-b") == [0]


def test_watching_one_namespace_looks_for_owned_objects_only_where_it_renders() -> None:
    # Namespaced RBAC cannot list in every namespace: only the policy's and the target's.
    operator = seeded(namespace="team-a", renderer=PluginRenderer(namespace="higress-system"))
    operator.run(until=5)
    uid = operator.policy()["metadata"]["uid"]
    lists = [w for _, op, w in operator.kube.timeline if op == "list" and w.startswith("Plugin")]
    assert set(lists) == {
        f"Plugin higress-system {POLICY_UID_LABEL}={uid}",
        f"Plugin team-a {POLICY_UID_LABEL}={uid}",
    }
    assert operator.conditions()["Programmed"]["status"] == "True"


# --- stopping -------------------------------------------------------------------------------


def test_interrupted_watch_ends_the_loop_cleanly() -> None:
    operator = seeded()

    def interrupt() -> None:
        raise Interrupted

    operator.clock.at(50, interrupt)
    operator.run(until=1000)
    assert operator.clock.t == 50
    assert operator.kube.stored(CHAT_ECDS) is not None


def test_owned_objects_are_found_by_label_in_every_namespace() -> None:
    operator = seeded()
    operator.run(until=5)
    uid = operator.policy()["metadata"]["uid"]
    assert (
        "list",
        f"ConfigMap * {POLICY_UID_LABEL}={uid}",
    ) in operator.kube.calls


def test_a_server_answering_410_again_and_again_is_given_back_off() -> None:
    operator = seeded()
    operator.kube.compacted = 10**9  # every watch is "too old"
    operator.run(until=10)
    assert operator.times("list", "TokenRateLimitPolicy *") == [0, 0, 1.0, 3.0, 7.0]
