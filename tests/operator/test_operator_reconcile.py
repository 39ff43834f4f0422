"""The operator's reconcile function: a policy as the API returns it → plan and status.

Pure: no API, no clock. Inputs are the recorded shapes in tests/fixtures/kube/.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from support.operator_reconcile import NOW, UID, PluginRenderer, recorded
from tokenlimit.apply.kube import ref_of
from tokenlimit.operator.reconcile import (
    FINALIZER,
    HASH_ANNOTATION,
    POLICY_UID_LABEL,
    Plan,
    Settings,
    contains,
    failed_status,
    reconcile,
)

LATER = NOW + timedelta(minutes=5)
SETTINGS = Settings(gateway="envoy")


def as_stored(obj: dict[str, Any], uid: str = "0e1d2c3b-0000-4000-8000-000000000001") -> dict:
    """`obj` as the server returns it after apply: its own metadata and defaults added."""
    stored = copy.deepcopy(obj)
    stored["metadata"].update(
        uid=uid, resourceVersion="48300", generation=1, creationTimestamp="2025-06-02T09:21:04Z"
    )
    stored.setdefault("spec", {})["defaultedByServer"] = True
    return stored


def after(plan: Plan, policy: dict[str, Any]) -> dict[str, Any]:
    """The policy once the plan's status was written."""
    written = copy.deepcopy(policy)
    if plan.status is not None:
        written["status"] = plan.status
    return written


# --- a new policy ---------------------------------------------------------------------------


def test_new_policy_renders_owned_objects_and_reports_accepted_and_programmed() -> None:
    policy = recorded("policy.json")
    plan = reconcile(policy, [], SETTINGS, PluginRenderer(), NOW)

    assert plan.accepted and not plan.delete and not plan.add_finalizer
    (obj,) = plan.apply
    assert plan.desired == plan.apply
    meta = obj["metadata"]
    assert meta["name"] == "tokenlimit-chat" and meta["namespace"] == "team-a"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "tokenlimit.io/v1alpha1",
            "kind": "TokenRateLimitPolicy",
            "name": "chat",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "tokenlimit-operator",
        POLICY_UID_LABEL: UID,
    }
    assert meta["annotations"]["tokenlimit.io/policy"] == "team-a/chat"
    assert len(meta["annotations"][HASH_ANNOTATION]) == 32
    assert plan.status == {
        "observedGeneration": 2,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "observedGeneration": 2,
                "lastTransitionTime": "2025-06-02T09:21:03Z",
                "reason": "Accepted",
                "message": "valid: rule chat, 1 rule item",
            },
            {
                "type": "Programmed",
                "status": "True",
                "observedGeneration": 2,
                "lastTransitionTime": "2025-06-02T09:21:03Z",
                "reason": "Programmed",
                "message": "applied 1 object: Plugin team-a/tokenlimit-chat",
            },
        ],
    }


def test_reconciling_again_changes_nothing_and_writes_no_status() -> None:
    policy = recorded("policy.json")
    first = reconcile(policy, [], SETTINGS, PluginRenderer(), NOW)
    owned = [as_stored(o) for o in first.apply]

    second = reconcile(after(first, policy), owned, SETTINGS, PluginRenderer(), LATER)

    assert second.apply == () and second.delete == () and second.status is None
    assert not second.changes
    assert second.desired[0]["metadata"]["name"] == "tokenlimit-chat"


def test_the_api_objects_other_fields_do_not_reach_the_loader() -> None:
    # managedFields, annotations, uid, status: a policy read back validates like the file did.
    policy = recorded("policy.json")
    policy["status"] = {"observedGeneration": 1, "conditions": []}
    plan = reconcile(policy, [], SETTINGS, PluginRenderer(), NOW)
    assert plan.accepted, plan.message


# --- an invalid spec ------------------------------------------------------------------------


def invalid(policy: dict[str, Any], generation: int) -> dict[str, Any]:
    bad = copy.deepcopy(policy)
    bad["metadata"]["generation"] = generation
    bad["spec"]["ruleItems"][0]["limitKeys"][0]["key"] = "alice"  # per-header needs * or regexp
    return bad


def test_invalid_spec_is_refused_naming_the_field_and_keeps_the_last_good_objects() -> None:
    policy = recorded("policy.json")
    good = reconcile(policy, [], SETTINGS, PluginRenderer(), NOW)
    owned = [as_stored(o) for o in good.apply]

    plan = reconcile(invalid(after(good, policy), 3), owned, SETTINGS, PluginRenderer(), LATER)

    assert not plan.accepted
    assert plan.apply == () and plan.delete == () and plan.desired == ()
    assert plan.status is not None
    accepted, programmed = plan.status["conditions"]
    assert accepted == {
        "type": "Accepted",
        "status": "False",
        "observedGeneration": 3,
        "lastTransitionTime": "2025-06-02T09:26:03Z",
        "reason": "Invalid",
        "message": (
            "spec.ruleItems[0].limitKeys[0].key: must be '*' or 'regexp:<pattern>' for "
            'limitByPerHeader, got "alice" (to budget one literal value, use limitByHeader)'
        ),
    }
    # The objects of generation 2 still run: Programmed says so, unchanged.
    assert programmed == good.status["conditions"][1]
    assert programmed["observedGeneration"] == 2
    assert plan.status["observedGeneration"] == 3


def test_invalid_first_generation_says_nothing_is_programmed() -> None:
    plan = reconcile(invalid(recorded("policy.json"), 1), [], SETTINGS, PluginRenderer(), NOW)
    assert plan.status is not None
    programmed = plan.status["conditions"][1]
    assert (programmed["status"], programmed["reason"]) == ("False", "Invalid")
    assert programmed["message"] == (
        "nothing is programmed: no generation of this policy has been accepted yet"
    )


def test_refused_again_writes_nothing_and_fixed_flips_accepted_back() -> None:
    policy = recorded("policy.json")
    good = reconcile(policy, [], SETTINGS, PluginRenderer(), NOW)
    owned = [as_stored(o) for o in good.apply]
    bad = invalid(after(good, policy), 3)
    refused = reconcile(bad, owned, SETTINGS, PluginRenderer(), LATER)

    again = reconcile(after(refused, bad), owned, SETTINGS, PluginRenderer(), LATER)
    assert again.status is None and not again.changes

    fixed = after(refused, bad)
    fixed["metadata"]["generation"] = 4
    fixed["spec"] = copy.deepcopy(policy["spec"])
    plan = reconcile(fixed, owned, SETTINGS, PluginRenderer(), LATER + timedelta(minutes=1))
    assert plan.status is not None
    accepted, programmed = plan.status["conditions"]
    assert accepted["status"] == "True" and accepted["lastTransitionTime"] == "2025-06-02T09:27:03Z"
    # Programmed stayed True throughout: its transition time is the first one.
    assert programmed["status"] == "True" and programmed["lastTransitionTime"] == (
        "2025-06-02T09:21:03Z"
    )
    assert programmed["observedGeneration"] == 4


def test_a_renderer_refusal_is_reported_like_an_invalid_spec() -> None:
    class Refusing(PluginRenderer):
        def render(self, *args: Any) -> list[dict[str, Any]]:
            raise ValueError("spec.targetRef.gateway: the policy attaches to istio, not envoy")

    plan = reconcile(recorded("policy.json"), [], SETTINGS, Refusing(), NOW)
    assert not plan.accepted and plan.status is not None
    assert plan.status["conditions"][0]["message"] == (
        "spec.targetRef.gateway: the policy attaches to istio, not envoy"
    )


# --- changes --------------------------------------------------------------------------------


def test_spec_change_updates_the_objects_and_observed_generation_follows() -> None:
    policy = recorded("policy.json")
    first = reconcile(policy, [], SETTINGS, PluginRenderer(), NOW)
    owned = [as_stored(o) for o in first.apply]
    changed = after(first, policy)
    changed["metadata"]["generation"] = 3
    changed["spec"]["ruleItems"][0]["limitKeys"][0]["tokenPerMinute"] = 600

    plan = reconcile(changed, owned, SETTINGS, PluginRenderer(), LATER)

    (obj,) = plan.apply
    assert obj["spec"]["config"]["rule_items"][0]["limit_keys"][0]["token_per_minute"] == 600
    assert plan.status is not None and plan.status["observedGeneration"] == 3
    for c in plan.status["conditions"]:
        assert c["observedGeneration"] == 3
        assert c["lastTransitionTime"] == "2025-06-02T09:21:03Z"  # no flip, no new time


def test_a_field_no_longer_rendered_is_applied_away() -> None:
    # Subset comparison alone would call the old object (with the extra field) up to date.
    policy = recorded("policy.json")
    first = reconcile(policy, [], SETTINGS, PluginRenderer(extra={"priority": 10}), NOW)
    owned = [as_stored(o) for o in first.apply]
    plan = reconcile(after(first, policy), owned, SETTINGS, PluginRenderer(), LATER)
    (obj,) = plan.apply
    assert "priority" not in obj["spec"]


def test_a_hand_edit_of_an_owned_object_is_repaired() -> None:
    policy = recorded("policy.json")
    first = reconcile(policy, [], SETTINGS, PluginRenderer(), NOW)
    (edited,) = [as_stored(o) for o in first.apply]
    edited["spec"]["config"]["rule_name"] = "hand-edited"
    plan = reconcile(after(first, policy), [edited], SETTINGS, PluginRenderer(), LATER)
    assert len(plan.apply) == 1 and plan.status is None


def test_an_owned_object_no_longer_rendered_is_deleted() -> None:
    policy = recorded("policy.json")
    first = reconcile(policy, [], SETTINGS, PluginRenderer(), NOW)
    stale = as_stored(first.apply[0], uid="0e1d2c3b-0000-4000-8000-0000000000aa")
    stale["metadata"]["name"] = "tokenlimit-old-name"
    owned = [as_stored(first.apply[0]), stale]

    plan = reconcile(after(first, policy), owned, SETTINGS, PluginRenderer(), LATER)

    assert plan.apply == ()
    assert [ref_of(o).name for o in plan.delete] == ["tokenlimit-old-name"]
    assert plan.delete[0]["metadata"]["uid"] == "0e1d2c3b-0000-4000-8000-0000000000aa"


def test_objects_of_another_policy_are_never_deleted() -> None:
    policy = recorded("policy.json")
    first = reconcile(policy, [], SETTINGS, PluginRenderer(), NOW)
    foreign = as_stored(first.apply[0])
    foreign["metadata"]["name"] = "someone-elses"
    foreign["metadata"]["labels"][POLICY_UID_LABEL] = "another-uid"
    plan = reconcile(after(first, policy), [foreign], SETTINGS, PluginRenderer(), LATER)
    assert plan.delete == ()


# --- ownership across namespaces, deletion --------------------------------------------------


def test_an_object_in_another_namespace_gets_no_owner_reference_but_a_finalizer() -> None:
    # Kubernetes forbids cross-namespace owner references (the garbage collector would delete
    # the dependent), so such objects are owned by label and cleaned up through a finalizer.
    plan = reconcile(
        recorded("policy.json"), [], SETTINGS, PluginRenderer(namespace="higress-system"), NOW
    )
    (obj,) = plan.apply
    assert obj["metadata"]["namespace"] == "higress-system"
    assert "ownerReferences" not in obj["metadata"]
    assert obj["metadata"]["labels"][POLICY_UID_LABEL] == UID
    assert plan.add_finalizer


def test_a_policy_being_deleted_only_cleans_up() -> None:
    policy = recorded("policy.json")
    renderer = PluginRenderer(namespace="higress-system")
    first = reconcile(policy, [], SETTINGS, renderer, NOW)
    owned = [as_stored(o) for o in first.apply]
    deleting = after(first, policy)
    deleting["metadata"]["finalizers"] = [FINALIZER]
    deleting["metadata"]["deletionTimestamp"] = "2025-06-02T10:00:00Z"

    plan = reconcile(deleting, owned, SETTINGS, renderer, LATER)

    assert plan.deleting and plan.remove_finalizer
    assert plan.apply == () and plan.status is None
    assert [ref_of(o).name for o in plan.delete] == ["tokenlimit-chat"]


def test_failed_apply_reports_programmed_false_with_the_api_error() -> None:
    policy = recorded("policy.json")
    plan = reconcile(policy, [], SETTINGS, PluginRenderer(), NOW)
    status = failed_status(policy, plan, "Plugin team-a/tokenlimit-chat: 422 Invalid: bad", NOW)
    assert status is not None
    accepted, programmed = status["conditions"]
    assert accepted["status"] == "True"
    assert programmed == {
        "type": "Programmed",
        "status": "False",
        "observedGeneration": 2,
        "lastTransitionTime": "2025-06-02T09:21:03Z",
        "reason": "ApplyFailed",
        "message": "Plugin team-a/tokenlimit-chat: 422 Invalid: bad",
    }


# --- comparison -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual", "wanted", "expected"),
    [
        ({"a": 1, "b": 2}, {"a": 1}, True),  # the server added b
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": [1, {"x": 1, "y": 2}]}, {"a": [1, {"x": 1}]}, True),
        ({"a": [1, 2, 3]}, {"a": [1, 2]}, False),  # a list is the whole list
        ({"a": 1}, {"a": True}, False),  # JSON: 1 is not true
        ({"a": 1.0}, {"a": 1}, True),
        ({}, {"a": None}, True),
    ],
)
def test_contains(actual: object, wanted: object, expected: bool) -> None:
    assert contains(actual, wanted) is expected
