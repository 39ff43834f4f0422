"""Reconcile, as a pure function: a policy and what exists → what to apply, delete and report.

`reconcile(policy, owned, settings, renderer, now)` reads nothing and writes nothing. The
controller (controller.py) fetches its inputs and carries out the `Plan`; tests call it with
objects shaped like the API's answers.

Conventions followed (kubebuilder / metav1):
- Objects the policy renders carry `ownerReferences` to it (controller, blockOwnerDeletion), so
  deleting the policy garbage-collects them. Kubernetes forbids owner references across
  namespaces (the garbage collector would delete such a dependent), so an object rendered into
  another namespace is tracked by label only and the policy gets a finalizer that removes it.
- Every owned object has the label `tokenlimit.io/policy-uid`; owned objects no longer desired
  are deleted.
- `status.observedGeneration` and two `metav1.Condition`s: Accepted (the spec validated and
  rendered) and Programmed (the rendered objects were applied). `lastTransitionTime` moves only
  when a condition's status flips.
- A refused spec changes no object: the last good rendered objects stay, Programmed keeps
  saying which generation they came from, and Accepted says why the new spec was refused.
- Idempotent: when nothing changed the plan applies nothing and writes no status.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from tokenlimit.apply.kube import POLICY, Kind, Obj, ObjectRef, kind_of, ref_of
from tokenlimit.loader import LoadedPolicy, PolicyError, policy_from_data

GatewayKind = Literal["higress", "istio", "envoy"]
GATEWAY_KINDS: tuple[GatewayKind, ...] = ("higress", "istio", "envoy")

ACCEPTED = "Accepted"
PROGRAMMED = "Programmed"
REASON_ACCEPTED = "Accepted"
REASON_INVALID = "Invalid"
REASON_PROGRAMMED = "Programmed"
REASON_APPLY_FAILED = "ApplyFailed"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tokenlimit-operator"
POLICY_UID_LABEL = "tokenlimit.io/policy-uid"
POLICY_ANNOTATION = "tokenlimit.io/policy"  # namespace/name (names are too long for a label)
HASH_ANNOTATION = "tokenlimit.io/applied-hash"
FINALIZER = "tokenlimit.io/cleanup"

MESSAGE_CHARS_MAX = 32768  # metav1.Condition.message maxLength
NAMES_SHOWN_MAX = 5


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    """Where gateways fetch the filter module, and the sha256 (hex) they verify it against."""

    url: str
    sha256: str | None = None  # None: not verified (an OCI image given without its digest)


@dataclass(frozen=True)
class Settings:
    gateway: GatewayKind
    module: Module | None = None  # higress and istio: the module server's URL
    envoy_module_path: str = "/etc/tokenlimit/tokenlimit.wasm"  # envoy: the file in the pod


class Renderer(Protocol):
    """Policy → the gateway's objects. Pure; raises PolicyError or ValueError for bad input."""

    @property
    def kinds(self) -> tuple[Kind, ...]:
        """Every kind `render` may return: the controller lists these to find owned objects."""
        ...

    def render(
        self, policy: LoadedPolicy, document: Mapping[str, Any], settings: Settings
    ) -> list[Obj]: ...


# --- outputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    policy: ObjectRef
    generation: int
    accepted: bool
    desired: tuple[Obj, ...]  # every object this generation stands for (empty if refused)
    apply: tuple[Obj, ...]  # the desired objects that are missing or differ
    delete: tuple[Obj, ...]  # owned objects no longer desired, as they exist (uid included)
    status: Obj | None  # to write once applying succeeded; None when unchanged
    add_finalizer: bool = False
    remove_finalizer: bool = False
    deleting: bool = False  # the policy is being deleted: only clean up
    message: str = ""  # Accepted's message: the summary, or why the spec was refused

    @property
    def changes(self) -> bool:
        return bool(
            self.apply
            or self.delete
            or self.status is not None
            or self.add_finalizer
            or self.remove_finalizer
        )


# --- reconcile ------------------------------------------------------------------------------


def reconcile(
    policy: Mapping[str, Any],
    owned: Sequence[Mapping[str, Any]],
    settings: Settings,
    renderer: Renderer,
    now: datetime,
) -> Plan:
    """What to do for `policy` (as the API returns it), given the objects it owns now."""
    meta = policy["metadata"]
    ref = ref_of(policy)
    assert kind_of(policy) == POLICY, f"not a {POLICY}: {kind_of(policy)}"
    assert meta.get("uid"), "a policy read from the API has metadata.uid"
    generation = int(meta.get("generation") or 0)
    owned = [o for o in owned if _labels(o).get(POLICY_UID_LABEL) == meta["uid"]]
    finalizers = list(meta.get("finalizers") or [])

    if meta.get("deletionTimestamp"):
        return Plan(
            policy=ref,
            generation=generation,
            accepted=False,
            desired=(),
            apply=(),
            delete=tuple(copy.deepcopy(dict(o)) for o in owned),
            status=None,
            remove_finalizer=FINALIZER in finalizers,
            deleting=True,
        )

    try:
        loaded = policy_from_data(_spec_document(policy), origin=f"{POLICY.kind} {_where(ref)}")
        rendered = renderer.render(loaded, policy, settings)
    except PolicyError as exc:
        return _refused(policy, "; ".join(str(p) for p in exc.problems), now)
    except ValueError as exc:
        return _refused(policy, str(exc), now)

    desired = tuple(own(obj, policy) for obj in rendered)
    _check_unique(desired)
    existing = {_identity(o): o for o in owned}
    wanted = {_identity(o) for o in desired}
    apply = tuple(d for d in desired if _needs_apply(existing.get(_identity(d)), d))
    delete = tuple(copy.deepcopy(dict(o)) for o in owned if _identity(o) not in wanted)
    cross_namespace = any(_namespace(d) != ref.namespace for d in desired)
    summary = _accepted_message(loaded)
    status = next_status(
        policy,
        now,
        accepted=(True, REASON_ACCEPTED, summary),
        programmed=(True, REASON_PROGRAMMED, _programmed_message(desired)),
    )
    return Plan(
        policy=ref,
        generation=generation,
        accepted=True,
        desired=desired,
        apply=apply,
        delete=delete,
        status=status,
        add_finalizer=cross_namespace and FINALIZER not in finalizers,
        message=summary,
    )


def rendered_namespaces(
    policy: Mapping[str, Any], settings: Settings, renderer: Renderer
) -> set[str | None]:
    """The namespaces the policy's objects go to (none when it does not render)."""
    ref = ref_of(policy)
    try:
        loaded = policy_from_data(_spec_document(policy), origin=f"{POLICY.kind} {_where(ref)}")
        rendered = renderer.render(loaded, policy, settings)
    except (PolicyError, ValueError):
        return set()
    return {(o.get("metadata") or {}).get("namespace") or ref.namespace for o in rendered}


def _refused(policy: Mapping[str, Any], reason: str, now: datetime) -> Plan:
    meta = policy["metadata"]
    # Objects from an earlier generation keep running, untouched; Programmed keeps saying
    # which generation they are (its observedGeneration). Before any, Programmed says so.
    programmed: Verdict | None = None
    if _condition(policy, PROGRAMMED) is None:
        programmed = (
            False,
            REASON_INVALID,
            "nothing is programmed: no generation of this policy has been accepted yet",
        )
    message = _clip(reason)
    return Plan(
        policy=ref_of(policy),
        generation=int(meta.get("generation") or 0),
        accepted=False,
        desired=(),
        apply=(),
        delete=(),
        status=next_status(
            policy, now, accepted=(False, REASON_INVALID, message), programmed=programmed
        ),
        message=message,
    )


def failed_status(policy: Mapping[str, Any], plan: Plan, error: str, now: datetime) -> Obj | None:
    """The status after applying `plan` failed: Programmed False, ApplyFailed, the API's words."""
    return next_status(
        policy,
        now,
        accepted=(True, REASON_ACCEPTED, plan.message),
        programmed=(False, REASON_APPLY_FAILED, _clip(error)),
    )


Verdict = tuple[bool, str, str]  # status, reason, message


def next_status(
    policy: Mapping[str, Any],
    now: datetime,
    accepted: Verdict,
    programmed: Verdict | None,
) -> Obj | None:
    """The status to write, or None when it equals the current one (no write needed).

    `programmed=None` leaves the Programmed condition as it is. Conditions of other types
    (none are written by this operator) are kept.
    """
    current = dict(policy.get("status") or {})
    generation = int(policy["metadata"].get("generation") or 0)
    conditions = [c for c in current.get("conditions") or [] if isinstance(c, Mapping)]
    updates = {ACCEPTED: accepted}
    if programmed is not None:
        updates[PROGRAMMED] = programmed
    result: list[Obj] = []
    for type_ in (ACCEPTED, PROGRAMMED):
        previous = next((c for c in conditions if c.get("type") == type_), None)
        if type_ in updates:
            result.append(condition(type_, *updates[type_], generation, now, previous))
        elif previous is not None:
            result.append(dict(previous))
    result.extend(dict(c) for c in conditions if c.get("type") not in (ACCEPTED, PROGRAMMED))
    status = {**current, "observedGeneration": generation, "conditions": result}
    return None if status == current else status


def condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
    previous: Mapping[str, Any] | None = None,
) -> Obj:
    """A metav1.Condition; lastTransitionTime is kept unless the status flips."""
    status = "True" if ok else "False"
    return {
        "type": type_,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": (
            previous["lastTransitionTime"]
            if previous is not None and previous.get("status") == status
            else rfc3339(now)
        ),
        "reason": reason,
        "message": message,
    }


def rfc3339(moment: datetime) -> str:
    """metav1.Time: RFC 3339 in UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- ownership ------------------------------------------------------------------------------


def own(obj: Mapping[str, Any], policy: Mapping[str, Any]) -> Obj:
    """`obj` marked as the policy's: labels, annotation, owner reference, content hash."""
    result = copy.deepcopy(dict(obj))
    meta = result.setdefault("metadata", {})
    policy_meta = policy["metadata"]
    meta.setdefault("namespace", policy_meta.get("namespace"))
    meta["labels"] = {
        **(meta.get("labels") or {}),
        MANAGED_BY_LABEL: MANAGED_BY,
        POLICY_UID_LABEL: policy_meta["uid"],
    }
    annotations = {**(meta.get("annotations") or {}), POLICY_ANNOTATION: _where(ref_of(policy))}
    annotations.pop(HASH_ANNOTATION, None)
    if meta["namespace"] == policy_meta.get("namespace"):
        meta["ownerReferences"] = [owner_reference(policy)]
    meta["annotations"] = annotations
    annotations[HASH_ANNOTATION] = content_hash(result)
    return result


def owner_reference(policy: Mapping[str, Any]) -> Obj:
    return {
        "apiVersion": policy["apiVersion"],
        "kind": policy["kind"],
        "name": policy["metadata"]["name"],
        "uid": policy["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def content_hash(obj: Mapping[str, Any]) -> str:
    """sha256 of the object as rendered: a field dropped from the rendering changes it too."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def owned_selector(policy: Mapping[str, Any]) -> str:
    return f"{POLICY_UID_LABEL}={policy['metadata']['uid']}"


def contains(actual: object, wanted: object) -> bool:
    """Whether `actual` (as the server returns it, defaults filled in) holds all of `wanted`."""
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(
            (v is None and actual.get(k) is None) or (k in actual and contains(actual[k], v))
            for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return actual is wanted  # True == 1 in Python, not in JSON
    return actual == wanted


def _needs_apply(existing: Mapping[str, Any] | None, desired: Obj) -> bool:
    # The hash catches fields this operator stopped rendering (server-side apply removes them
    # when the new rendering is applied); `contains` catches edits by anyone else.
    if existing is None:
        return True
    applied = (existing.get("metadata") or {}).get("annotations") or {}
    return applied.get(HASH_ANNOTATION) != _annotations(desired)[HASH_ANNOTATION] or not contains(
        existing, desired
    )


# --- helpers --------------------------------------------------------------------------------


def _spec_document(policy: Mapping[str, Any]) -> Obj:
    # The loader validates the document a user wrote; the server's additions (uid,
    # managedFields, status ...) are not part of it.
    meta = policy["metadata"]
    document: Obj = {
        "apiVersion": policy.get("apiVersion"),
        "kind": policy.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
    }
    if "spec" in policy:
        document["spec"] = policy["spec"]
    return document


def _identity(obj: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    # Group, not version: the same object read at another version is still the same object.
    ref = ref_of(obj)
    return (ref.kind.group, ref.kind.kind, ref.namespace, ref.name)


def _check_unique(objects: Sequence[Obj]) -> None:
    seen: set[tuple[str, str, str | None, str]] = set()
    for obj in objects:
        identity = _identity(obj)
        if identity in seen:
            raise AssertionError(f"the renderer returned {ref_of(obj)} twice")
        seen.add(identity)


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _namespace(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("namespace")


def _condition(policy: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for c in (policy.get("status") or {}).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == type_:
            return c
    return None


def _where(ref: ObjectRef) -> str:
    return f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name


def _accepted_message(policy: LoadedPolicy) -> str:
    from tokenlimit.loader import summary

    return f"valid: {summary(policy)}"


def _programmed_message(desired: Sequence[Obj]) -> str:
    names = [str(ref_of(o)) for o in desired]
    shown = ", ".join(names[:NAMES_SHOWN_MAX])
    more = f" and {len(names) - NAMES_SHOWN_MAX} more" if len(names) > NAMES_SHOWN_MAX else ""
    noun = "object" if len(names) == 1 else "objects"
    return f"applied {len(names)} {noun}: {shown}{more}" if names else "nothing to apply"


def _clip(message: str) -> str:
    if len(message) <= MESSAGE_CHARS_MAX:
        return message
    return message[: MESSAGE_CHARS_MAX - 1] + "…"


def parse_time(text: str) -> datetime:
    """metav1.Time / MicroTime back to a datetime (UTC)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
