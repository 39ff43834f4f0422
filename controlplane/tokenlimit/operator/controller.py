"""One reconcile against the API: read the policy and what it owns, carry out the plan.

`PolicyController.sync(ref)` never raises for API errors: it returns an `Outcome` that says
what happened and, for a failure, whether and when to retry. The loop logs one line per
outcome and schedules the retries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from tokenlimit.apply.kube import ApiError, KubeClient, Obj, ObjectRef, ref_of
from tokenlimit.operator.reconcile import (
    FINALIZER,
    POLICY_UID_LABEL,
    Plan,
    Renderer,
    Settings,
    failed_status,
    owned_selector,
    reconcile,
    rendered_namespaces,
)

Result = Literal["unchanged", "programmed", "refused", "cleaned", "gone", "failed"]


@dataclass(frozen=True)
class Outcome:
    ref: ObjectRef
    result: Result
    generation: int = 0
    applied: int = 0
    deleted: int = 0
    status_written: bool = False
    detail: str = ""  # why refused, or what failed
    error: ApiError | None = None

    @property
    def failed(self) -> bool:
        return self.result == "failed"

    def line(self) -> str:
        """One log line: what happened to which policy."""
        where = f"{self.ref.namespace}/{self.ref.name}"
        gen = f" generation {self.generation}" if self.generation else ""
        counts = f"applied {self.applied}, deleted {self.deleted}"
        status = ", status written" if self.status_written else ""
        if self.result == "programmed":
            return f"{where}{gen}: programmed ({counts}{status})"
        if self.result == "unchanged":
            return f"{where}{gen}: up to date"
        if self.result == "refused":
            return f"{where}{gen}: refused, previous objects kept: {self.detail}"
        if self.result == "cleaned":
            return f"{where}: being deleted, cleaned up ({counts})"
        if self.result == "gone":
            return f"{where}: deleted; owned objects are garbage-collected"
        return f"{where}{gen}: failed ({counts}{status}): {self.detail}"


class TakeoverRefused(Exception):
    """A rendered object's name is taken by an object this policy does not own."""


class PolicyController:
    def __init__(
        self,
        client: KubeClient,
        settings: Settings,
        renderer: Renderer,
        now: Callable[[], datetime],
        namespace: str | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.renderer = renderer
        self.now = now
        # Watching one namespace (namespaced RBAC): owned objects are looked for only where
        # the policy renders them, not in every namespace.
        self.namespace = namespace

    def sync(self, ref: ObjectRef) -> Outcome:
        try:
            policy = self.client.get(ref)
            if policy is None:
                return Outcome(ref, "gone")
            owned = self._owned(policy)
            # Rendering may read Secrets the policy refers to: their API errors are retried.
            plan = reconcile(policy, owned, self.settings, self.renderer, self.now())
        except ApiError as exc:
            return Outcome(ref, "failed", detail=str(exc), error=exc)
        if plan.deleting:
            return self._clean_up(policy, plan)
        return self._carry_out(policy, plan, {ref_of(o) for o in owned})

    def _owned(self, policy: Obj) -> list[Obj]:
        # Objects rendered into another namespace are owned by label only, so they are looked
        # for by label: in every namespace, or (scoped) where the policy renders to.
        selector = owned_selector(policy)
        namespaces: list[str | None] = [None]
        if self.namespace is not None:
            found_in = rendered_namespaces(policy, self.settings, self.renderer)
            namespaces = sorted(found_in | {ref_of(policy).namespace}, key=str)
        found: list[Obj] = []
        for kind in self.renderer.kinds:
            for namespace in namespaces:
                found.extend(self.client.list(kind, namespace, selector).items)
        return found

    def _carry_out(self, policy: Obj, plan: Plan, owned: set[ObjectRef]) -> Outcome:
        ref = plan.policy
        applied = deleted = 0
        version = str(policy["metadata"].get("resourceVersion", ""))
        if not plan.changes:
            return Outcome(ref, "unchanged", plan.generation)
        current: Obj | None = None  # the object being written, named if it fails
        try:
            if plan.add_finalizer:
                # Before anything lands in another namespace, so its clean-up cannot be missed.
                finalizers = [*policy["metadata"].get("finalizers", []), FINALIZER]
                patched = self.client.patch(
                    ref, {"metadata": {"finalizers": finalizers, "resourceVersion": version}}
                )
                version = str(patched["metadata"]["resourceVersion"])
            for current in plan.apply:
                if ref_of(current) not in owned:
                    self._check_takeover(current, policy)
                self.client.apply(current)
                applied += 1
            for current in plan.delete:
                if self.client.delete(ref_of(current), current["metadata"].get("uid")):
                    deleted += 1
        except (ApiError, TakeoverRefused) as exc:
            return self._failed(policy, plan, exc, current, applied, deleted, version)
        if plan.status is not None:
            try:
                self.client.patch_status(ref, plan.status, version)
            except ApiError as exc:
                return Outcome(
                    ref, "failed", plan.generation, applied, deleted, False, str(exc), exc
                )
        result: Result = "programmed" if plan.accepted else "refused"
        return Outcome(
            ref,
            result,
            plan.generation,
            applied,
            deleted,
            plan.status is not None,
            "" if plan.accepted else plan.message,
        )

    def _check_takeover(self, obj: Obj, policy: Obj) -> None:
        existing = self.client.get(ref_of(obj))
        if existing is None:
            return
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(POLICY_UID_LABEL) != policy["metadata"]["uid"]:
            raise TakeoverRefused(
                f"{ref_of(obj)} already exists and is not managed by this policy: "
                "delete or rename it, or change the policy's name"
            )

    def _failed(
        self,
        policy: Obj,
        plan: Plan,
        exc: ApiError | TakeoverRefused,
        obj: Obj | None,
        applied: int,
        deleted: int,
        version: str,
    ) -> Outcome:
        error = exc if isinstance(exc, ApiError) else None
        # An API error is about the object being written: say which (TakeoverRefused does).
        where = f"{ref_of(obj)}: " if obj is not None and error is not None else ""
        detail = f"{where}{exc}"
        written = False
        # A server that asked us to slow down (429) is not sent another write.
        if error is None or error.status != 429:
            status = failed_status(policy, plan, detail, self.now())
            if status is not None:
                try:
                    self.client.patch_status(plan.policy, status, version)
                    written = True
                except ApiError:
                    pass  # the retry writes it; the outcome line already says what failed
        return Outcome(
            plan.policy, "failed", plan.generation, applied, deleted, written, detail, error
        )

    def _clean_up(self, policy: Obj, plan: Plan) -> Outcome:
        ref = plan.policy
        deleted = 0
        try:
            for obj in plan.delete:
                if self.client.delete(ref_of(obj), obj["metadata"].get("uid")):
                    deleted += 1
            if plan.remove_finalizer:
                finalizers = [f for f in policy["metadata"]["finalizers"] if f != FINALIZER]
                version = str(policy["metadata"].get("resourceVersion", ""))
                self.client.patch(
                    ref, {"metadata": {"finalizers": finalizers, "resourceVersion": version}}
                )
        except ApiError as exc:
            return Outcome(ref, "failed", plan.generation, 0, deleted, False, str(exc), exc)
        return Outcome(ref, "cleaned", plan.generation, 0, deleted)
