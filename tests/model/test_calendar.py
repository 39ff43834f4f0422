"""Calendar windows (tokenlimit.model.calendar) against the shared vectors, contract/calendar.json.

calendar.zig (`zig build test`) and calendar.lua (tests/filter/test_calendar_vectors.py, on a real
Redis) pass the same vectors, so the three agree. Each vector's expected start and end are
written by hand as local times; this file also checks that those strings are the instants the
`*_ms` numbers say, and that they carry the offset the zone really has then."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from tokenlimit.model import calendar
from tokenlimit.model.calendar import (
    DAY_MS,
    HOUR_MS,
    WINDOWS,
    CalendarTable,
    render_current,
    render_table,
    window_bounds,
)

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads((ROOT / "contract" / "calendar.json").read_text())
VECTORS: list[dict[str, Any]] = DOCUMENT["vectors"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(text: str) -> int:
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(milliseconds=1)


def table(zone: str) -> CalendarTable:
    entries = DOCUMENT["zones"][zone]["transitions"]
    return CalendarTable(zone=zone, transitions=tuple((int(f), int(o)) for f, o in entries))


def test_bounds_are_the_ones_the_other_halves_read() -> None:
    assert DOCUMENT["bounds"] == {
        "transitions_max": calendar.TRANSITIONS_MAX,
        "offset_s_max": calendar.OFFSET_S_MAX,
        "time_ms_min": calendar.TIME_MS_MIN,
        "time_ms_max": calendar.TIME_MS_MAX,
    }


@pytest.mark.parametrize("zone", [z for z, t in DOCUMENT["zones"].items() if t["rendered_from"]])
def test_the_vector_tables_are_what_render_table_makes(zone: str) -> None:
    rendered = DOCUMENT["zones"][zone]
    got = render_table(zone, ms(rendered["rendered_from"]), ms(rendered["rendered_to"]))
    assert got == table(zone)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_window_bounds_follow_the_shared_vectors(vector: dict[str, Any]) -> None:
    got = window_bounds(vector["now_ms"], vector["window"], table(vector["zone"]))
    assert got == (vector["start_ms"], vector["end_ms"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_local_times_say_what_the_numbers_say(vector: dict[str, Any]) -> None:
    """The hand-written local times are the vectors' real content: each must be the same
    instant as its number, and (inside the rendered span of a real zone) be written with the
    offset the zone has at that instant, so a mistyped offset cannot hide in the numbers."""
    rendered = DOCUMENT["zones"][vector["zone"]]
    for field in ("now", "start", "end"):
        text = vector[field]
        if text is None:
            continue
        assert ms(text) == vector[f"{field}_ms"], field
        inside = rendered["rendered_from"] and (
            ms(rendered["rendered_from"]) <= ms(text) < ms(rendered["rendered_to"])
        )
        if inside:
            written = datetime.fromisoformat(text).utcoffset()
            real = datetime.fromisoformat(text).astimezone(ZoneInfo(vector["zone"])).utcoffset()
            assert written == real, f"{field} {text} is written with the wrong offset"


def test_the_vectors_cover_every_window_and_the_dst_zones() -> None:
    assert {v["window"] for v in VECTORS} == set(WINDOWS)
    zones = {v["zone"] for v in VECTORS}
    assert {"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"} <= zones


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("window", WINDOWS[2:])
def test_windows_tile_time_across_a_dst_year(zone: str, window: calendar.Window) -> None:
    """Every instant lies in exactly one window: windows are contiguous, never empty around an
    instant, and the one after a window starts where it ends."""
    zone_table = render_table(zone, ms("2024-01-01T00:00:00Z"), ms("2025-01-01T00:00:00Z"))
    step_ms = 7 * 60_000 + 1234 if window == "hour" else HOUR_MS // 4 + 17
    now = ms("2024-01-01T00:00:00Z")
    while now < ms("2025-01-01T00:00:00Z"):
        start, end = window_bounds(now, window, zone_table)
        assert start <= now < end
        assert window_bounds(end, window, zone_table)[0] == end
        assert window_bounds(start - 1, window, zone_table)[1] == start
        now += step_ms if window == "hour" else max(step_ms, (end - now) // 3)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_periods_start_at_local_midnight_as_zoneinfo_reads_it(zone: str) -> None:
    """For zones whose midnight is never skipped, a day/week/month starts where zoneinfo puts
    local midnight of its first day (an independent oracle for the table and the math)."""
    info = ZoneInfo(zone)
    zone_table = render_table(zone, ms("2024-01-01T00:00:00Z"), ms("2025-01-01T00:00:00Z"))
    now = ms("2024-01-01T12:00:00Z")
    while now < ms("2024-12-31T00:00:00Z"):
        local = datetime.fromtimestamp(now / 1000, info)
        firsts = {
            "day": local.date(),
            "week": local.date() - timedelta(days=local.weekday()),
            "month": local.date().replace(day=1),
        }
        for window, first in firsts.items():
            midnight = datetime(first.year, first.month, first.day, tzinfo=info)
            start, _ = window_bounds(now, window, zone_table)  # type: ignore[arg-type]
            assert start == ms(midnight.isoformat()), (window, local)
        now += 5 * HOUR_MS + 13 * 60_000


def test_a_dst_day_lasts_23_or_25_hours() -> None:
    berlin = render_table("Europe/Berlin", ms("2024-01-01T00:00:00Z"), ms("2025-01-01T00:00:00Z"))
    lengths = set()
    for day in range(366):
        start, end = window_bounds(ms("2024-01-01T12:00:00+01:00") + day * DAY_MS, "day", berlin)
        lengths.add((end - start) // HOUR_MS)
    assert lengths == {23, 24, 25}


def test_render_current_covers_a_year_back_and_ten_ahead() -> None:
    now = ms("2026-12-06T00:00:00Z")
    berlin = render_current("Europe/Berlin", now)
    assert berlin.transitions[0][0] == now - calendar.YEAR_MS
    assert 20 <= len(berlin.transitions) <= calendar.TRANSITIONS_MAX
    assert render_current("UTC", now).transitions == ((now - calendar.YEAR_MS, 0),)
    assert render_current("Asia/Kolkata", now).transitions == ((now - calendar.YEAR_MS, 19800),)


def test_an_unknown_zone_is_named() -> None:
    with pytest.raises(ValueError, match="time_zone 'Europe/Berln' is not a known IANA"):
        render_table("Europe/Berln", 0, DAY_MS)


@pytest.mark.parametrize(
    ("transitions", "message"),
    [
        ((), "at least 1 item"),
        (((1_000_000_000_000, 0), (1_000_000_000_000, 3600)), "increasing time order"),
        (((1_000_000_000_000, 18 * 3600 + 1),), "less than or equal to 64800"),
        (((-1, 0),), "greater than or equal to 0"),
        (tuple((1_000_000_000_000 + i, 0) for i in range(65)), "at most 64 items"),
    ],
)
def test_a_malformed_table_is_refused(transitions: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CalendarTable(zone="X", transitions=transitions)
