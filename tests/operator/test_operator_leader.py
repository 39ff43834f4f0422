"""Leader election on a Lease, against the in-memory API server and a fake clock."""

from __future__ import annotations

import json
from pathlib import Path

from support.fakekube import FakeKube
from tokenlimit.apply.kube import LEASE, ApiError, ObjectRef
from tokenlimit.operator.leader import LeaderElector

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube"
LEASE_REF = ObjectRef(LEASE, "tokenlimit-system", "tokenlimit-operator")
OTHER = "tokenlimit-operator-7d9f8b6c5-x2k4p_5b2f0c1e-8a3d-4e6f-9b7c-1d2e3f4a5b6c"


def elector(kube: FakeKube, identity: str = "me") -> LeaderElector:
    return LeaderElector(kube, "tokenlimit-system", kube.clock, identity=identity)


def test_creates_the_lease_when_there_is_none() -> None:
    kube = FakeKube()
    me = elector(kube)
    assert me.acquire(lambda: False)
    lease = kube.stored(LEASE_REF)
    assert lease is not None
    assert lease["spec"] == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "2025-01-01T00:00:00.000000Z",
        "renewTime": "2025-01-01T00:00:00.000000Z",
        "leaseTransitions": 0,
    }


def test_waits_out_a_lease_held_by_another_then_takes_it() -> None:
    kube = FakeKube()
    kube.seed(json.loads((FIXTURES / "lease.json").read_text()))
    me = elector(kube)

    assert me.acquire(lambda: kube.clock.t > 100)
    # Observed unchanged for the lease duration (15 s), checked every retry period (2 s).
    assert kube.clock.t == 16
    spec = kube.stored(LEASE_REF)["spec"]  # type: ignore[index]
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 3
    assert spec["acquireTime"] == spec["renewTime"] == "2025-01-01T00:00:16.000000Z"


def test_a_holder_that_keeps_renewing_keeps_the_lease() -> None:
    kube = FakeKube()
    kube.seed(json.loads((FIXTURES / "lease.json").read_text()))
    other = elector(kube, OTHER)

    def renew_every(seconds: float, until: float) -> None:
        t = seconds
        while t < until:
            kube.clock.at(t, lambda: kube.edit(LEASE_REF, _renewed(kube)))
            t += seconds

    renew_every(5, 60)
    me = elector(kube)
    assert not me.acquire(lambda: kube.clock.t >= 60)
    assert kube.stored(LEASE_REF)["spec"]["holderIdentity"] == OTHER  # type: ignore[index]
    assert not other.leader and not me.leader


def _renewed(kube: FakeKube):
    def change(lease: dict) -> None:
        lease["spec"]["renewTime"] = kube.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    return change


def test_of_two_candidates_one_wins() -> None:
    kube = FakeKube()
    first, second = elector(kube, "first"), elector(kube, "second")
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    assert first.leader and not second.leader


def test_a_conflicting_update_loses_the_race() -> None:
    kube = FakeKube()
    me = elector(kube)
    assert me.try_acquire_or_renew()
    kube.fail(
        "replace",
        ApiError(
            409, "Conflict", 'Operation cannot be fulfilled on leases.coordination.k8s.io "x"'
        ),
    )
    assert not me.try_acquire_or_renew()


def test_renewing_failing_past_the_deadline_is_lost() -> None:
    kube = FakeKube()
    me = elector(kube)
    assert me.acquire(lambda: False)
    kube.fail("get", ApiError(500, "InternalError", "etcd leader changed"), times=100)
    lost: list[float] = []
    me.renew_until_lost(lambda: kube.clock.t > 100, lambda: lost.append(kube.clock.t))
    assert lost == [10.0]  # the renew deadline, checked every 2 s
    assert not me.leader


def test_renewing_keeps_the_lease_fresh() -> None:
    kube = FakeKube()
    me = elector(kube)
    assert me.acquire(lambda: False)
    me.renew_until_lost(lambda: kube.clock.t > 6, lambda: None)  # renews at 2, 4, 6
    assert kube.stored(LEASE_REF)["spec"]["renewTime"] == (  # type: ignore[index]
        "2025-01-01T00:00:06.000000Z"
    )


def test_release_hands_the_lease_over_at_once() -> None:
    kube = FakeKube()
    me = elector(kube)
    assert me.acquire(lambda: False)
    me.release()
    spec = kube.stored(LEASE_REF)["spec"]  # type: ignore[index]
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    successor = elector(kube, "next")
    assert successor.try_acquire_or_renew()
