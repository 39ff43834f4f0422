"""The pure parts: pacing from the gateway's headers, the batch file checks, windows."""

from __future__ import annotations

import pytest
from tokenlimit.jobs import pacing
from tokenlimit.jobs.batch_file import JobError, check_input
from tokenlimit.jobs.config import JobsConfig, parse_window


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("42s", 42.0), ("1m30s", 90.0), ("120ms", 0.12), ("1h2m", 3720.0), ("3", 3.0)],
)
def test_reset_durations_in_openais_form(text: str, seconds: float) -> None:
    assert pacing.parse_reset(text) == pytest.approx(seconds)


def test_reset_that_is_not_a_duration_is_ignored() -> None:
    assert pacing.parse_reset("soon") is None
    assert pacing.parse_reset("5sx") is None


def test_after_a_429_the_longest_wait_asked_for_wins() -> None:
    headers = {
        "retry-after": "1",
        "x-ratelimit-reset-tokens": "1m",
        "x-ratelimit-reset-requests": "2s",
    }
    assert pacing.retry_delay_s(headers) == 60.0
    assert pacing.retry_delay_s({}) == pacing.DEFAULT_RETRY_S


def test_the_interactive_share_holds_workers_back_until_the_reset() -> None:
    low = {
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "150",
        "x-ratelimit-reset-tokens": "12s",
    }
    assert pacing.reserve_delay_s(low, share=0.2) == 12.0
    assert pacing.reserve_delay_s(low, share=0.1) == 0.0
    assert pacing.reserve_delay_s(low, share=0.0) == 0.0
    assert pacing.reserve_delay_s({}, share=0.5) == 0.0  # nothing reported: nothing to keep


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [pacing.backoff_s(a, 0.5, 3.0) for a in range(4)] == [0.5, 1.0, 2.0, 3.0]


def test_completion_windows() -> None:
    assert parse_window("24h") == 86400.0
    assert parse_window("90s") == 90.0
    with pytest.raises(ValueError, match="'0s' is not a duration"):
        parse_window("0s")


def test_a_line_must_be_a_post_request_without_streaming() -> None:
    config = JobsConfig(gateway="http://127.0.0.1:1")
    get = b'{"custom_id": "a", "method": "GET", "url": "/v1/x", "body": {}}\n'
    with pytest.raises(JobError, match="line 1: method must be POST"):
        check_input(get, config)
    stream = b'{"custom_id": "a", "method": "POST", "url": "/v1/x", "body": {"stream": true}}\n'
    with pytest.raises(JobError, match="streaming is not supported"):
        check_input(stream, config)
    with pytest.raises(JobError, match="`custom_id` must be a string"):
        check_input(b'{"method": "POST", "url": "/v1/x", "body": {}}\n', config)
    with pytest.raises(JobError, match="holds no request lines"):
        check_input(b"\n\n", config)
