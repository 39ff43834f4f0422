"""Calendar windows in a rule's time zone: the table the filter gets, and the window math.

The filter runs as wasm32-freestanding without tzdata, so it cannot resolve an IANA zone name.
The control plane renders the zone into a `CalendarTable`: the UTC offsets in effect over a
bounded span (by default a year back to ten years ahead), as `(from_ms, offset_s)` transitions.
The filter (filter/src/meter/calendar.zig) and the Redis script (contract/calendar.lua) compute
windows from that table with exactly the math of `window_bounds` below; contract/calendar.json
holds the vectors all three pass.

What a window is (the same definition in all three):
- `second`, `minute`, `hour`: real durations aligned to the local clock, cut where the offset
  changes. An hour is never longer than an hour: the hour a fall-back repeats is counted twice,
  and a Kolkata (+05:30) hour runs from :30 to :30 UTC.
- `day`, `week` (Monday), `month` (the 1st): calendar periods. A period starts at the first
  instant at which the local clock reads its start (00:00 on its first day), so a DST day lasts
  23 or 25 hours, and a midnight skipped by a DST jump starts the day at the jump. The period
  holding `now` is the one whose start the local clock has already reached at some instant up
  to `now`: after a fall-back that turns the clock back across a period boundary, the new
  period has begun and stays begun, so periods never overlap and never leave a gap.

Beyond the table's span the first and last offsets extend: a table is re-rendered on every
apply, and its span (ten years ahead) is far longer than any config lives.

All arithmetic is on integers (milliseconds, seconds); `now_ms` is clamped to
[TIME_MS_MIN, TIME_MS_MAX] so that a broken host clock gives a well-formed window, not an error.
"""

from __future__ import annotations

import bisect
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

# These bounds are also in contract/calendar.json ("bounds"), which the tests compare with these
# constants and calendar.zig's, so the halves cannot drift; they move into contract/limits.json
# when the feature is integrated.
TRANSITIONS_MAX: Final = 64  # 11 years of two DST changes a year is 23 entries
OFFSET_S_MAX: Final = 18 * 3600  # ISO 8601's bound; real zones span -12:00 .. +14:00
TIME_MS_MIN: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
TIME_MS_MAX: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

SECOND_MS: Final = 1000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
YEAR_MS: Final = 365 * DAY_MS
SPAN_BEFORE_MS: Final = YEAR_MS  # a window that began before the render still needs its offset
SPAN_AFTER_MS: Final = 10 * YEAR_MS
# Rule-based zones never change their offset twice within a day; a scan at this step finds every
# change, and a bisection pins it to the second.
_SCAN_STEP_S: Final = 6 * 3600

Window = Literal["second", "minute", "hour", "day", "week", "month"]
WINDOWS: Final[tuple[Window, ...]] = ("second", "minute", "hour", "day", "week", "month")
_FIXED_MS: Final[dict[str, int]] = {"second": SECOND_MS, "minute": MINUTE_MS, "hour": HOUR_MS}

Offset = Annotated[int, Field(ge=-OFFSET_S_MAX, le=OFFSET_S_MAX)]
Instant = Annotated[int, Field(ge=0, le=TIME_MS_MAX)]


class CalendarTable(BaseModel):
    """A zone's UTC offsets: from `transitions[i][0]` (UTC ms) on, the local clock reads UTC +
    `transitions[i][1]` seconds, until the next entry. The first entry's offset also holds
    before it, the last one's after it. This is the filter config's `calendar` object."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    zone: str
    transitions: tuple[tuple[Instant, Offset], ...] = Field(
        min_length=1, max_length=TRANSITIONS_MAX
    )

    @model_validator(mode="after")
    def _increasing(self) -> CalendarTable:
        for (before, _), (after, _) in zip(self.transitions, self.transitions[1:], strict=False):
            if after <= before:
                raise ValueError(
                    f"transitions must be in increasing time order: {after} follows {before}"
                )
        return self


UTC_TABLE: Final = CalendarTable(zone="UTC", transitions=((TIME_MS_MIN, 0),))


def render_current(zone: str, now_ms: int | None = None) -> CalendarTable:
    """The table the filter config carries: `zone` from a year ago to ten years ahead of now
    (`now_ms` defaults to the clock; tests inject it)."""
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    return render_table(zone, now_ms - SPAN_BEFORE_MS, now_ms + SPAN_AFTER_MS)


def render_table(zone: str, from_ms: int, to_ms: int) -> CalendarTable:
    """The table of an IANA zone over [from_ms, to_ms] (clamped to the supported range).
    ValueError names an unknown zone, and a zone whose offset changes more often than the
    filter holds."""
    try:
        info = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"time_zone {zone!r} is not a known IANA time zone name (e.g. 'Europe/Berlin', 'UTC')"
        ) from None
    first_s = max(from_ms, TIME_MS_MIN) // SECOND_MS
    last_s = min(to_ms, TIME_MS_MAX) // SECOND_MS
    transitions = [(first_s * SECOND_MS, _offset_s(info, first_s))]
    at_s = first_s
    while at_s < last_s:
        step_s = min(at_s + _SCAN_STEP_S, last_s)
        if _offset_s(info, step_s) == transitions[-1][1]:
            at_s = step_s
            continue
        at_s = _first_change_s(info, at_s, step_s)
        transitions.append((at_s * SECOND_MS, _offset_s(info, at_s)))
        if len(transitions) > TRANSITIONS_MAX:
            raise ValueError(
                f"time_zone {zone!r} changes its UTC offset more than {TRANSITIONS_MAX - 1} "
                f"times between {from_ms} and {to_ms} ms; the filter holds at most "
                f"{TRANSITIONS_MAX} table entries"
            )
    return CalendarTable(zone=zone, transitions=tuple(transitions))


def _offset_s(info: ZoneInfo, at_s: int) -> int:
    offset = datetime.fromtimestamp(at_s, UTC).astimezone(info).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return int(offset // timedelta(seconds=1))


def _first_change_s(info: ZoneInfo, low_s: int, high_s: int) -> int:
    """The first second in (low, high] whose offset differs from low's (one exists)."""
    before = _offset_s(info, low_s)
    while high_s - low_s > 1:
        middle = (low_s + high_s) // 2
        if _offset_s(info, middle) == before:
            low_s = middle
        else:
            high_s = middle
    return high_s


def window_bounds(now_ms: int, window: Window, table: CalendarTable) -> tuple[int, int]:
    """[start_ms, end_ms) of the window holding `now_ms` (clamped to the supported range);
    `end_ms - now_ms` is what `Retry-After` and the reset headers count down."""
    now = min(max(now_ms, TIME_MS_MIN), TIME_MS_MAX)
    froms = [entry[0] for entry in table.transitions]
    segment = max(bisect.bisect_right(froms, now) - 1, 0)
    offset_ms = table.transitions[segment][1] * SECOND_MS
    if window in _FIXED_MS:
        length = _FIXED_MS[window]
        local = now + offset_ms
        start = local - local % length - offset_ms
        end = start + length
        # Cut where the offset changes: the local clock jumps there, so does the window.
        if segment > 0:
            start = max(start, froms[segment])
        if segment + 1 < len(froms):
            end = min(end, froms[segment + 1])
        return start, end
    reached = _local_reached_ms(now, table, segment)
    period = _period_start_local_ms(reached, window)
    return _first_reaching_ms(period, table), _first_reaching_ms(
        _next_period_local_ms(period, window), table
    )


def _local_reached_ms(now: int, table: CalendarTable, segment: int) -> int:
    """The latest local time the clock has shown at any instant up to `now`: after a fall-back
    it is the time just before the jump until the clock catches up."""
    entries = table.transitions
    reached = now + entries[segment][1] * SECOND_MS
    for index in range(1, segment + 1):
        reached = max(reached, entries[index][0] - 1 + entries[index - 1][1] * SECOND_MS)
    return reached


def _first_reaching_ms(local_ms: int, table: CalendarTable) -> int:
    """The first instant at which the local clock reads `local_ms` or later: a time skipped by a
    jump forward is reached at the jump; a time shown twice is reached the first time."""
    entries = table.transitions
    for index, (from_ms, offset_s) in enumerate(entries):
        candidate = local_ms - offset_s * SECOND_MS
        if index > 0:
            candidate = max(candidate, from_ms)
        if index + 1 == len(entries) or candidate < entries[index + 1][0]:
            return candidate
    raise AssertionError("unreachable: the last segment always answers")


def _period_start_local_ms(local_ms: int, window: Window) -> int:
    days = local_ms // DAY_MS
    if window == "week":
        days -= (days + 3) % 7  # 1970-01-01 was a Thursday: day 0 is 3 days after a Monday
    elif window == "month":
        year, month, _ = civil_from_days(days)
        days = days_from_civil(year, month, 1)
    return days * DAY_MS


def _next_period_local_ms(start_local_ms: int, window: Window) -> int:
    if window == "day":
        return start_local_ms + DAY_MS
    if window == "week":
        return start_local_ms + 7 * DAY_MS
    year, month, _ = civil_from_days(start_local_ms // DAY_MS)
    if month == 12:
        return days_from_civil(year + 1, 1, 1) * DAY_MS
    return days_from_civil(year, month + 1, 1) * DAY_MS


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm, which the
    Zig and Lua halves spell the same way)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01; the inverse of days_from_civil."""
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + (3 if shifted_month < 10 else -9)
    year = year_of_era + era * 400 + (month <= 2)
    return year, month, day
