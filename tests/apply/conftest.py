"""Fixtures for the client seam tests (test_kube_*.py): the real client on a recorded server.

`_discovery_cache_in_tmp` is not autouse here (test_push.py needs no Kubernetes): each
test_kube_*.py module asks for it with `pytestmark`, as it was autouse in their one former file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.recorded_kube import RecordedApiServer, serving
from tokenlimit.apply.kube_client import DynamicKube, without_hidden_retries


@pytest.fixture
def api() -> Iterator[tuple[RecordedApiServer, DynamicKube]]:
    from kubernetes import client

    recorded_server = RecordedApiServer()
    with serving(recorded_server) as url:
        configuration = client.Configuration()
        configuration.host = url
        without_hidden_retries(configuration)
        yield recorded_server, DynamicKube(client.ApiClient(configuration), discovery_cache=None)


@pytest.fixture
def _discovery_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client caches discovery in the temp directory, keyed by server URL.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
