"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Only the holder of the Lease reconciles, so two replicas never write the same objects. The
holder renews `renewTime` every `retry_period_s`; others wait until they have seen the record
unchanged for `lease_duration_s` (measured on their own monotonic clock, never by comparing
their wall clock with the holder's), then take it with an update carrying the Lease's
resourceVersion, so of two candidates exactly one wins (the other gets 409 Conflict).

A holder that cannot renew for `renew_deadline_s` has lost the Lease: the command exits at
once (as controller-runtime does) rather than keep writing next to a new leader.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime

from tokenlimit.apply.kube import LEASE, ApiError, KubeClient, Obj, ObjectRef
from tokenlimit.operator.loop import Clock

log = logging.getLogger("tokenlimit.operator")

LEASE_NAME = "tokenlimit-operator"
LEASE_DURATION_S = 15.0  # client-go / controller-runtime defaults
RENEW_DEADLINE_S = 10.0
RETRY_PERIOD_S = 2.0


def default_identity() -> str:
    """`<hostname>_<uuid>`: the pod name, made unique across restarts (client-go's form)."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        clock: Clock,
        identity: str | None = None,
        name: str = LEASE_NAME,
        lease_duration_s: float = LEASE_DURATION_S,
        renew_deadline_s: float = RENEW_DEADLINE_S,
        retry_period_s: float = RETRY_PERIOD_S,
    ) -> None:
        assert lease_duration_s > renew_deadline_s > retry_period_s > 0
        self.client = client
        self.ref = ObjectRef(LEASE, namespace, name)
        self.clock = clock
        self.identity = identity or default_identity()
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.leader = False
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    def acquire(self, stopping: Callable[[], bool]) -> bool:
        """Block until this process holds the Lease (True) or is stopping (False)."""
        log.info(
            "waiting to lead: Lease %s/%s as %s", self.ref.namespace, self.ref.name, self.identity
        )
        while not stopping():
            if self.try_acquire_or_renew():
                log.info("leading: holding Lease %s/%s", self.ref.namespace, self.ref.name)
                return True
            self.clock.sleep(self.retry_period_s)
        return False

    def renew_until_lost(self, stopping: Callable[[], bool], on_lost: Callable[[], None]) -> None:
        """Renew every retry period; call `on_lost` once renewing failed for the deadline."""
        while not stopping():
            self.clock.sleep(self.retry_period_s)
            if stopping():
                return
            if self.try_acquire_or_renew():
                continue
            if self.clock.monotonic() - self._renewed_at >= self.renew_deadline_s:
                self.leader = False
                log.error(
                    "leader election lost: Lease %s/%s not renewed for %.0fs",
                    self.ref.namespace,
                    self.ref.name,
                    self.renew_deadline_s,
                )
                on_lost()
                return

    def try_acquire_or_renew(self) -> bool:
        try:
            return self._try()
        except ApiError as exc:
            log.warning("Lease %s/%s: %s", self.ref.namespace, self.ref.name, exc)
            return False

    def _try(self) -> bool:
        now = self.clock.now()
        lease = self.client.get(self.ref)
        if lease is None:
            try:
                self.client.create(self._lease(None, now, transitions=0))
            except ApiError as exc:
                if exc.conflict:  # AlreadyExists: another candidate created it first
                    return False
                raise
            return self._won()
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed = record
            self._observed_at = self.clock.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        held_by_other = holder and holder != self.identity
        if held_by_other and self.clock.monotonic() < self._observed_at + duration:
            self.leader = False
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
        acquired = spec.get("acquireTime") if holder == self.identity else None
        updated = self._lease(lease, now, transitions, acquired)
        try:
            self.client.replace(updated)
        except ApiError as exc:
            if exc.conflict:  # someone else wrote the Lease since we read it
                return False
            raise
        return self._won()

    def _won(self) -> bool:
        self.leader = True
        self._renewed_at = self.clock.monotonic()
        return True

    def _lease(
        self, current: Obj | None, now: datetime, transitions: int, acquired: str | None = None
    ) -> Obj:
        metadata: Obj = {"name": self.ref.name, "namespace": self.ref.namespace}
        if current is not None:
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        stamp = micro_time(now)
        return {
            "apiVersion": LEASE.api_version,
            "kind": LEASE.kind,
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration_s),
                "acquireTime": acquired or stamp,
                "renewTime": stamp,
                "leaseTransitions": transitions,
            },
        }

    def release(self) -> None:
        """Give the Lease up on a clean stop, so the next leader need not wait it out."""
        if not self.leader:
            return
        self.leader = False
        try:
            lease = self.client.get(self.ref)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            released = self._lease(
                lease, self.clock.now(), int(lease["spec"].get("leaseTransitions") or 0)
            )
            released["spec"]["holderIdentity"] = ""
            released["spec"]["leaseDurationSeconds"] = 1
            self.client.replace(released)
            log.info("released Lease %s/%s", self.ref.namespace, self.ref.name)
        except ApiError as exc:
            log.warning("could not release Lease %s/%s: %s", self.ref.namespace, self.ref.name, exc)


def pod_namespace() -> str | None:
    """The operator's own namespace: $POD_NAMESPACE, or the service account's."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None
