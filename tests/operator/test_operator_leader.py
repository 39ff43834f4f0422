"""Leader election (kubernetes.leaderelection on our Lease lock) against the in-memory API
server. The library reads `time.time()` and sleeps with `time.sleep()`; both are the fake
clock's here, so 60 s of election pass at once and every step's time is exact."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.leaderelection import leaderelection
from support.fakekube import FakeClock, FakeKube
from tokenlimit.apply.kube import LEASE, ApiError, ObjectRef
from tokenlimit.operator.leader import Leadership

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube"
LEASE_REF = ObjectRef(LEASE, "tokenlimit-system", "tokenlimit-operator")
OTHER = "tokenlimit-operator-7d9f8b6c5-x2k4p_5b2f0c1e-8a3d-4e6f-9b7c-1d2e3f4a5b6c"


class Stopped(Exception):
    """The test's time is up (the operator would get SIGTERM here)."""


class FakeTime:
    """`time` as the library uses it, on the fake clock; sleeping past `stop_after` stops."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.stop_after: float | None = None

    def time(self) -> float:
        return self.clock.now().timestamp()

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)
        if self.stop_after is not None and self.clock.t > self.stop_after:
            raise Stopped


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.fake_time = FakeTime(fake.clock)  # type: ignore[attr-defined]
    monkeypatch.setattr(leaderelection, "time", fake.fake_time)  # type: ignore[attr-defined]
    yield fake


def stop_after(kube: FakeKube, seconds: float) -> None:
    kube.fake_time.stop_after = seconds  # type: ignore[attr-defined]


def elector(kube: FakeKube, identity: str = "me") -> Leadership:
    return Leadership(kube, "tokenlimit-system", identity=identity)


def lease_spec(kube: FakeKube) -> dict[str, Any]:
    lease = kube.stored(LEASE_REF)
    assert lease is not None
    spec: dict[str, Any] = lease["spec"]
    return spec


def test_creates_the_lease_when_there_is_none(kube: FakeKube) -> None:
    me = elector(kube)
    me.acquire()
    assert me.leader
    assert lease_spec(kube) == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "2025-01-01T00:00:00.000000Z",
        "renewTime": "2025-01-01T00:00:00.000000Z",
        "leaseTransitions": 0,
    }


def test_waits_out_a_lease_held_by_another_then_takes_it(kube: FakeKube) -> None:
    kube.seed(json.loads((FIXTURES / "lease.json").read_text()))
    stop_after(kube, 100)
    me = elector(kube)
    me.acquire()
    # Observed unchanged for the lease duration (15 s), checked every retry period (2 s).
    assert kube.clock.t == 16
    spec = lease_spec(kube)
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 3
    assert spec["acquireTime"] == spec["renewTime"] == "2025-01-01T00:00:16.000000Z"


def _renewed(kube: FakeKube) -> Callable[[dict[str, Any]], None]:
    def change(lease: dict[str, Any]) -> None:
        lease["spec"]["renewTime"] = kube.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    return change


def test_a_holder_that_keeps_renewing_keeps_the_lease(kube: FakeKube) -> None:
    kube.seed(json.loads((FIXTURES / "lease.json").read_text()))
    for t in range(5, 60, 5):
        kube.clock.at(t, lambda: kube.edit(LEASE_REF, _renewed(kube)))
    stop_after(kube, 60)
    me = elector(kube)
    with pytest.raises(Stopped):
        me.acquire()
    assert lease_spec(kube)["holderIdentity"] == OTHER
    assert not me.leader
    assert kube.writes() == []  # a lease that is renewed is never written by a follower


def test_of_two_candidates_one_wins(kube: FakeKube) -> None:
    first, second = elector(kube, "first"), elector(kube, "second")
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    assert first.leader and not second.leader


def test_a_conflicting_update_loses_the_race(kube: FakeKube) -> None:
    me = elector(kube)
    assert me.try_acquire_or_renew()
    kube.fail(
        "replace",
        ApiError(
            409, "Conflict", 'Operation cannot be fulfilled on leases.coordination.k8s.io "x"'
        ),
    )
    assert not me.try_acquire_or_renew()
    assert not me.leader


def test_renewing_failing_past_the_deadline_is_lost(kube: FakeKube) -> None:
    me = elector(kube)
    me.acquire()
    kube.fail("get", ApiError(500, "InternalError", "etcd leader changed"), times=100)
    lost: list[float] = []
    me.renew_until_lost(lambda: lost.append(kube.clock.t))
    assert lost == [10.0]  # the renew deadline, tried every 2 s
    assert not me.leader


def test_renewing_keeps_the_lease_fresh(kube: FakeKube) -> None:
    me = elector(kube)
    me.acquire()
    stop_after(kube, 6)
    lost: list[float] = []
    with pytest.raises(Stopped):
        me.renew_until_lost(lambda: lost.append(kube.clock.t))  # renews at 0, 2, 4, 6
    assert lease_spec(kube)["renewTime"] == "2025-01-01T00:00:06.000000Z"
    assert lost == [] and me.leader


def test_release_hands_the_lease_over_at_once(kube: FakeKube) -> None:
    me = elector(kube)
    me.acquire()
    me.release()
    spec = lease_spec(kube)
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert not me.try_acquire_or_renew()  # released: it writes the Lease no more
    successor = elector(kube, "next")
    assert successor.try_acquire_or_renew()
    assert lease_spec(kube)["leaseTransitions"] == 1


def test_a_released_leader_does_not_report_the_lease_lost(kube: FakeKube) -> None:
    me = elector(kube)
    me.acquire()
    me.release()
    lost: list[float] = []
    me.renew_until_lost(lambda: lost.append(kube.clock.t))
    assert lost == []
