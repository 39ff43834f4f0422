"""The client seam without a server: recorded API responses and watch streams, parsed."""

from __future__ import annotations

import json

import pytest
from support.recorded_kube import FIXTURES, POLICIES, response_of
from tokenlimit.apply.kube import CONFIG_MAP, POLICY, ApiError, Resource, api_error, watch_event

pytestmark = pytest.mark.usefixtures("_discovery_cache_in_tmp")


def parsed(name: str) -> ApiError:
    return api_error(*response_of(name))


# --- recorded responses, parsed ----------------------------------------------------------


def test_status_conflict() -> None:
    error = parsed("conflict-409.json")
    assert (error.status, error.reason, error.conflict, error.transient) == (
        409,
        "Conflict",
        True,
        False,
    )
    assert error.message.startswith(
        'Operation cannot be fulfilled on tokenratelimitpolicies.tokenlimit.io "chat": '
    )
    assert error.retry_after_s is None


def test_apply_conflict_keeps_its_causes() -> None:
    error = parsed("apply-conflict-409.json")
    assert error.status == 409 and error.reason == "Conflict"
    assert [c["field"] for c in error.causes] == [".spec.priority"]


def test_invalid_names_the_field() -> None:
    error = parsed("invalid-422.json")
    assert (error.status, error.reason) == (422, "Invalid")
    assert [c["field"] for c in error.causes] == ["spec.phase"]
    assert str(error).startswith('422 Invalid: WasmPlugin.extensions.higress.io "tokenlimit-')


def test_internal_error_is_transient() -> None:
    error = parsed("internal-500.json")
    assert (error.status, error.reason, error.transient) == (500, "InternalError", True)
    assert "failed calling webhook" in error.message


def test_plain_text_429_with_retry_after() -> None:
    error = parsed("too-many-requests-429.json")
    assert (error.status, error.reason, error.transient) == (429, "TooManyRequests", True)
    assert error.message == "Too many requests, please try again later."
    assert error.retry_after_s == 1.0


def test_not_found() -> None:
    error = parsed("not-found-404.json")
    assert (
        error.not_found and error.message == 'tokenratelimitpolicies.tokenlimit.io "gone" not found'
    )


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Retry-After": "7"}, b"", 7.0),
        ({"retry-after": "3"}, b"", 3.0),  # header names are case-insensitive
        ({}, json.dumps({"kind": "Status", "details": {"retryAfterSeconds": 4}}).encode(), 4.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"", None),  # not sent by the server
        ({"Retry-After": "86400"}, b"", 300.0),  # honoured up to a bound
        ({"Retry-After": "-1"}, b"", None),
    ],
)
def test_retry_after(headers: dict[str, str], body: bytes, expected: float | None) -> None:
    assert api_error(429, headers, body).retry_after_s == expected


def test_a_body_that_is_neither_status_nor_text() -> None:
    error = api_error(502, {}, b"")
    assert (error.status, error.message, error.transient) == (502, "HTTP 502 without a body", True)


def test_recorded_watch_stream() -> None:
    lines = (FIXTURES / "watch-policies.jsonl").read_text().splitlines()
    events = [watch_event(line) for line in lines[:-1]]
    assert [(e.type, e.resource_version) for e in events if e is not None] == [
        ("MODIFIED", "48260"),
        ("MODIFIED", "48261"),
        ("ADDED", "48270"),
        ("BOOKMARK", "48300"),
        ("DELETED", "48310"),
    ]
    with pytest.raises(ApiError) as raised:
        watch_event(lines[-1])
    assert raised.value.gone and raised.value.reason == "Expired"
    assert raised.value.message == "too old resource version: 48250 (48312)"


def test_watch_lines_that_are_not_events() -> None:
    assert watch_event(b"\n") is None
    with pytest.raises(ApiError, match="not a watch event"):
        watch_event("{}")
    with pytest.raises(ApiError, match="unknown watch event type 'RESYNC'"):
        watch_event('{"type": "RESYNC", "object": {}}')


def test_resource_paths() -> None:
    policies = Resource(POLICY, "tokenratelimitpolicies", True)
    assert policies.path("team-a", "chat") == f"{POLICIES}/chat"
    assert policies.path(None) == "/apis/tokenlimit.io/v1alpha1/tokenratelimitpolicies"
    assert Resource(CONFIG_MAP, "configmaps", True).path("ns") == "/api/v1/namespaces/ns/configmaps"
