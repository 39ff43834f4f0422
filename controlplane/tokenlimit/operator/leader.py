"""Leader election on a coordination.k8s.io/v1 Lease: `kubernetes.leaderelection` does it.

The official client's `LeaderElection` (a port of client-go's) runs the algorithm: a holder
renews every retry period (2 s); others wait until they have seen the record unchanged for
the lease duration (15 s) on their own clock, then take it; a holder that cannot renew within
the renew deadline (10 s) stops leading. Only the holder reconciles, so two replicas never
write the same objects, and a leader that lost the Lease exits at once (as controller-runtime
does) rather than keep writing next to a new leader.

Written here, because the library does not do it:
- `KubeLeaseLock`: the library's lock interface (get / create / update) on the project's one
  client (`tokenlimit.apply.kube.KubeClient`) instead of its own `CoordinationV1Api`, so the
  election runs on the operator's credentials and, in tests, against fakekube. Updates carry
  the Lease's resourceVersion, so of two candidates one wins (the other gets 409); it also
  counts `leaseTransitions`, which the library's lock leaves alone.
- `release()`: the library has no ReleaseOnCancel; a clean stop empties the holder so the next
  replica need not wait the lease out.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import types
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tokenlimit.apply.kube import LEASE, ApiError, KubeClient, Obj, ObjectRef

log = logging.getLogger("tokenlimit.operator")

LEASE_NAME = "tokenlimit-operator"
LEASE_DURATION_S = 15  # client-go / controller-runtime defaults
RENEW_DEADLINE_S = 10
RETRY_PERIOD_S = 2


def default_identity() -> str:
    """`<hostname>_<uuid>`: the pod name, made unique across restarts (client-go's form)."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _to_lease_time(record_time: str) -> str:
    # The library writes str(datetime.fromtimestamp(t)): local wall time without a zone.
    return micro_time(datetime.fromisoformat(record_time).astimezone())


def _to_record_time(lease_time: str) -> str:
    moment = datetime.fromisoformat(lease_time.replace("Z", "+00:00"))
    return str(moment.astimezone().replace(tzinfo=None))


class KubeLeaseLock:
    """The `kubernetes.leaderelection` lock interface on a KubeClient (see the module)."""

    def __init__(self, client: KubeClient, namespace: str, name: str, identity: str) -> None:
        self.client = client
        self.ref = ObjectRef(LEASE, namespace, name)
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.leader = False
        self.released = False
        self._lease: Obj | None = None  # as last read or written: its resourceVersion

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        """(True, the election record) or (False, what the library reads a failure from)."""
        try:
            lease = self.client.get(self.ref)
        except ApiError as exc:
            log.warning("Lease %s/%s: %s", self.namespace, self.name, exc)
            return False, types.SimpleNamespace(body=json.dumps({"code": exc.status}), reason=exc)
        if lease is None:
            return False, types.SimpleNamespace(body=json.dumps({"code": 404}), reason="NotFound")
        self._lease = lease
        return True, _record(lease.get("spec") or {})

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        if self.released:
            return False
        lease: Obj = {
            "apiVersion": LEASE.api_version,
            "kind": LEASE.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {**_spec(election_record), "leaseTransitions": 0},
        }
        return self._write(self.client.create, lease)

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        if self.released or self._lease is None:
            return False
        lease = self._lease
        spec = dict(lease.get("spec") or {})
        transitions = int(spec.get("leaseTransitions") or 0)
        if spec.get("holderIdentity") != updated_record.holder_identity:
            transitions += 1
        metadata = {k: lease["metadata"][k] for k in ("name", "namespace", "resourceVersion")}
        updated: Obj = {
            "apiVersion": LEASE.api_version,
            "kind": LEASE.kind,
            "metadata": metadata,
            "spec": {**spec, **_spec(updated_record), "leaseTransitions": transitions},
        }
        return self._write(self.client.replace, updated)

    def _write(self, write: Callable[[Obj], Obj], lease: Obj) -> bool:
        try:
            self._lease = write(lease)
        except ApiError as exc:
            # 409: another candidate created or updated it first; others are retried too.
            if not exc.conflict:
                log.warning("Lease %s/%s: %s", self.namespace, self.name, exc)
            self.leader = False
            return False
        self.leader = lease["spec"]["holderIdentity"] == self.identity
        return True

    def release(self) -> None:
        """Give the Lease up on a clean stop (and write it no more)."""
        was_leader, self.leader, self.released = self.leader, False, True
        if not was_leader:
            return
        try:
            lease = self.client.get(self.ref)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1)
            lease["spec"]["renewTime"] = micro_time(datetime.now(UTC))
            self.client.replace(lease)
            log.info("released Lease %s/%s", self.namespace, self.name)
        except ApiError as exc:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)


def _record(spec: Obj) -> Any:
    from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord

    def text(key: str, convert: Callable[[str], str] = str) -> str | None:
        value = spec.get(key)
        return convert(str(value)) if value else None

    return LeaderElectionRecord(  # type: ignore[no-untyped-call]
        text("holderIdentity"),
        text("leaseDurationSeconds"),
        text("acquireTime", _to_record_time),
        text("renewTime", _to_record_time),
    )


def _spec(record: Any) -> Obj:
    return {
        "holderIdentity": record.holder_identity,
        "leaseDurationSeconds": int(record.lease_duration),
        "acquireTime": _to_lease_time(record.acquire_time),
        "renewTime": _to_lease_time(record.renew_time),
    }


class Leadership:
    """One candidate: `acquire` blocks until it leads, `renew_until_lost` keeps it leading."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        identity: str | None = None,
        name: str = LEASE_NAME,
    ) -> None:
        from kubernetes.leaderelection import electionconfig, leaderelection

        self.lock = KubeLeaseLock(client, namespace, name, identity or default_identity())
        config = electionconfig.Config(  # type: ignore[no-untyped-call]
            self.lock,
            LEASE_DURATION_S,
            RENEW_DEADLINE_S,
            RETRY_PERIOD_S,
            onstarted_leading=lambda: None,
            onstopped_leading=lambda: None,
        )
        # Any: the kubernetes package has no type hints.
        self.election: Any = leaderelection.LeaderElection(config)  # type: ignore[no-untyped-call]

    @property
    def leader(self) -> bool:
        return self.lock.leader

    def acquire(self) -> None:
        """Block until this process holds the Lease (SIGTERM interrupts the wait)."""
        where = f"{self.lock.namespace}/{self.lock.name}"
        log.info("waiting to lead: Lease %s as %s", where, self.lock.identity)
        self.election.acquire()
        log.info("leading: holding Lease %s", where)

    def try_acquire_or_renew(self) -> bool:
        return bool(self.election.try_acquire_or_renew())

    def renew_until_lost(self, on_lost: Callable[[], None]) -> None:
        """Renew until renewing failed for the deadline, then `on_lost` (not after release)."""
        self.election.renew_loop()
        if self.lock.released:
            return
        self.lock.leader = False
        log.error(
            "leader election lost: Lease %s/%s not renewed for %ds",
            self.lock.namespace,
            self.lock.name,
            RENEW_DEADLINE_S,
        )
        on_lost()

    def release(self) -> None:
        self.lock.release()


def pod_namespace() -> str | None:
    """The operator's own namespace: $POD_NAMESPACE, or the service account's."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None
