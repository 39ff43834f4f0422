"""The submitter's credentials at rest: what Redis holds under `cred:{id}` while a job lives.

Anyone who can read the jobs' Redis (the gateway's bridge shares it, its RDB/AOF files, a
backup) must not read live API keys there: the record is encrypted with the service's key
file (Fernet); a record no key opens fails its batch or job with a clear error, at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from click.testing import CliRunner
from cryptography.fernet import Fernet
from jobs_support import Services, chat_lines, jsonl, metric, wait_for
from support.redis_server import RedisServer
from test_jobs_async import CHAT, call
from tokenlimit.dev import process
from tokenlimit.jobs.credentials import CredentialBox, CredentialsUnreadable, parse_keys

SECRET = "sk-live-0123456789abcdef-never-at-rest"
PREFIX = "tokenlimit:jobs"
AUTH = {"authorization": f"Bearer {SECRET}"}
MockStats = Callable[[], dict[str, Any]]


def _client(url: str, key: str = SECRET) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _submit(client: openai.OpenAI, total: int = 2) -> str:
    uploaded = client.files.create(file=("in.jsonl", jsonl(chat_lines(total))), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    ).id


def _submit_job(url: str) -> str:
    status, _headers, job = call(
        url + "/v1/chat/completions", "POST", CHAT, {**AUTH, "prefer": "respond-async"}
    )
    assert status == 202, job
    return str(job["id"])


def _key_file(path: Path, *keys: str) -> Path:
    path.write_text("".join(key + "\n" for key in keys))
    return path


def _final(client: openai.OpenAI, batch_id: str, services: Services) -> Any:
    def done() -> Any:
        found = client.batches.retrieve(batch_id)
        return found if found.status in ("completed", "failed", "expired") else None

    return wait_for(done, 30, f"batch {batch_id} to finish", services)


def test_the_stored_credential_record_does_not_hold_the_credential(
    services: Services, redis_server: RedisServer
) -> None:
    _proc, url = services.start(0)  # no workers: the records stay while we look at them
    batch_id = _submit(_client(url))
    job_id = _submit_job(url)
    db = redis.Redis.from_url(redis_server.url)
    for record_id in (batch_id, job_id):
        raw = db.get(f"{PREFIX}:cred:{record_id}")
        assert raw, f"the credential record of {record_id} is missing"
        assert SECRET.encode() not in raw
        assert b"sk-live" not in raw and b"authorization" not in raw.lower()
    # Nothing else in Redis holds it either (files, batch hash, lines, queue entries).
    keys = db.keys(PREFIX + ":*")
    assert len(keys) > 3
    for key in keys:
        assert SECRET.encode() not in (db.dump(key) or b""), key


def test_a_batch_runs_end_to_end_with_its_credentials(
    services: Services, redis_server: RedisServer, mock_stats: MockStats
) -> None:
    _proc, url = services.start(2)
    client = _client(url)
    batch_id = _submit(client, 3)
    batch = _final(client, batch_id, services)
    assert batch.status == "completed" and batch.request_counts.completed == 3
    # The gateway (and the upstream behind it) saw the submitter's own credential.
    assert mock_stats()["last_request"]["headers"]["authorization"] == AUTH["authorization"]
    assert not redis.Redis.from_url(redis_server.url).exists(f"{PREFIX}:cred:{batch_id}")


def test_a_key_rotated_away_fails_the_batch_and_the_job_with_a_clear_error(
    services: Services, mock_stats: MockStats, tmp_path: Path
) -> None:
    old = _key_file(tmp_path / "old.key", Fernet.generate_key().decode())
    new = _key_file(tmp_path / "new.key", Fernet.generate_key().decode())
    writer, url = services.start(0, key_file=old)
    client = _client(url)
    batch_id = _submit(client, 3)
    job_id = _submit_job(url)
    process.terminate(writer)

    runner, url = services.start(2, key_file=new)  # the old key is gone from its file
    client = _client(url)
    batch = _final(client, batch_id, services)
    assert batch.status == "failed"
    assert batch.request_counts.failed == 3 and batch.request_counts.completed == 0
    assert batch.errors is not None and batch.errors.data is not None
    assert [e.code for e in batch.errors.data] == ["credentials_unreadable"]
    lines = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    assert [line["error"]["code"] for line in lines] == ["credentials_unreadable"] * 3
    assert "cannot be decrypted" in lines[0]["error"]["message"]

    def job_done() -> Any:
        found = call(f"{url}/v1/jobs/{job_id}", headers=AUTH)[2]
        return found if found["status"] == "failed" else None

    job = wait_for(job_done, 20, "the job to fail", services)
    assert job["response"] is None
    assert job["error"]["code"] == "credentials_unreadable"
    assert job["error"]["type"] == "server_error"
    assert mock_stats()["requests"] == 0  # nothing was sent without its credentials
    assert metric(url, "tokenlimit_jobs_credentials_unreadable_total") == 4
    assert runner.poll() is None  # no crash, and it still serves
    log = services.log_text()
    assert log.count(f"batch {batch_id}: its stored credentials cannot be decrypted") == 1
    assert f"job {job_id}: its stored credentials cannot be decrypted" in log
    assert str(new) in log and SECRET not in log


def test_with_the_new_key_first_and_the_old_one_kept_old_records_still_run(
    services: Services, redis_server: RedisServer, tmp_path: Path
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    writer, url = services.start(0, key_file=_key_file(tmp_path / "old.key", old_key))
    old_batch = _submit(_client(url))
    process.terminate(writer)

    rotated = _key_file(tmp_path / "rotated.key", new_key, old_key)
    _proc, url = services.start(0, key_file=rotated)
    client = _client(url)
    new_batch = _submit(client)
    # New records are encrypted with the first key alone: the old one can be dropped later.
    sealed = redis.Redis.from_url(redis_server.url).get(f"{PREFIX}:cred:{new_batch}")
    assert sealed is not None
    assert SECRET in Fernet(new_key.encode()).decrypt(sealed).decode()
    _proc, url = services.start(2, key_file=rotated)
    for batch_id in (old_batch, new_batch):
        batch = _final(client, batch_id, services)
        assert batch.status == "completed" and batch.request_counts.completed == 2


# --- the key file: refused at start with its path and the reason, never its bytes -----------


def _jobs(*args: str, env: dict[str, str] | None = None) -> Any:
    from tokenlimit.cli import main

    argv = ["jobs", "--gateway", "http://127.0.0.1:1", "--redis", "redis://127.0.0.1:1/0"]
    return CliRunner().invoke(main, [*argv, *args], env=env)


def test_a_malformed_key_file_is_refused_with_its_path(tmp_path: Path) -> None:
    good = Fernet.generate_key().decode()
    bad = _key_file(tmp_path / "keys", good, "not-a-key-but-private-material")
    result = _jobs("--credential-key-file", str(bad))
    assert result.exit_code == 2
    assert f"{bad}: line 2 is not a Fernet key" in result.output
    assert "not-a-key-but-private" not in result.output and good not in result.output


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "cannot read it: No such file or directory"), ("\n# only a comment\n", "holds no key")],
)
def test_a_missing_or_empty_key_file_is_refused_with_the_reason(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    result = _jobs(env={"TOKENLIMIT_JOBS_CREDENTIAL_KEY_FILE": str(path)})
    assert result.exit_code == 2
    assert f"{path}: {reason}" in " ".join(result.output.split())


def test_without_a_key_the_service_does_not_start() -> None:
    result = _jobs(env={"TOKENLIMIT_JOBS_CREDENTIAL_KEY_FILE": ""})
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "needs a key to encrypt the credentials" in output
    assert "--credential-key-file" in output and "TOKENLIMIT_JOBS_CREDENTIAL_KEY_FILE" in output


def test_a_record_opens_only_for_its_own_batch_and_unaltered() -> None:
    box = CredentialBox(parse_keys(Fernet.generate_key().decode(), "k"), "k")
    sealed = box.seal("batch_a", AUTH)
    assert box.open("batch_a", sealed) == AUTH
    with pytest.raises(CredentialsUnreadable, match="belongs to another batch or job"):
        box.open("batch_b", sealed)
    altered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(CredentialsUnreadable, match="no key in k decrypts them"):
        box.open("batch_a", altered)
    assert SECRET not in repr(box)
