"""`tokenlimit usage`: the budgets the Redis store holds right now, as a table.

Counter keys are written by the filter (filter/src/match.zig `counterKey`) as

    tokenlimit:{<rule>}:<type>[:<source>]:<tokens|requests|cost>:<window s>:<identity>[:m=<model>]

pinned by contract/counter_keys.json for both halves. A per-model budget (`per_model`,
`limit_by_per_model`) carries the model as a last segment, named as an identity is (as-is
when short and plain, else hashed); cost counters hold micro-USD (docs/design-model-budgets.md).
`<identity>` is the key value itself for
addresses and consumer names, and the first 16 bytes of its SHA-256 in hex for values that may
be credentials (headers, parameters, cookies) or that cannot sit in a key as they are. `--key K`
finds a caller by computing that identity, so nobody has to store a raw key.

The numbers come from contract/budget.lua's read-only `peek`, the script the filter admits
with: the fixed, sliding and token-bucket math exists once, in the script, and not here. The
script needs each counter's algorithm and limit, which only the policy knows (a counter key
names neither); without a policy, counters are read as fixed windows of unknown limit.
Calendar windows (weeks, months, and hours and days in a rule's time zone) are read as the
filter admits them: with the window's code and the rule's zone table around now, through
calendar.lua + budget.lua joined as the filter joins them (contract/calendar.lua says why).
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, cast

from tokenlimit.model.counters import counter_rule_name

if TYPE_CHECKING:
    import redis
    from redis.commands.core import Script

    from tokenlimit.model import FilterConfig, RuleItem
    from tokenlimit.model.calendar import CalendarTable
    from tokenlimit.model.filter_config import BudgetFields

KEY_PREFIX = "tokenlimit:"
HASHED_TYPES = frozenset({"header", "param", "cookie", "per_header", "per_param", "per_cookie"})
# The types whose `limit_by_*` value is not part of the key (Higress ignores it).
SOURCELESS_TYPES = frozenset({"global", "consumer", "per_consumer"})
UNITS = {"tokens": "token", "requests": "request"}  # key spelling: config field prefix
WINDOWS_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
# Model budgets (design-model-budgets.md §3, §4): cost counters and calendar weeks and months
# (keyed by their nominal length).
COST_UNITS = {"cost": "cost"}
CALENDAR_WINDOWS = {"week": 604_800, "month": 2_629_746}
ALL_UNITS = {**UNITS, **COST_UNITS}
ALL_WINDOWS_S = {**WINDOWS_S, **CALENDAR_WINDOWS}
WINDOW_NAMES = {seconds: name for name, seconds in ALL_WINDOWS_S.items()}
# budget.lua's codes for a window that follows the calendar (script.zig `windowArgument`):
# weeks and months always; hours and days when the rule has a zone other than UTC.
CALENDAR_CODES = {3600: -1, 86_400: -2, 604_800: -3, 2_629_746: -4}
ZONE_MARGIN_MS = 40 * 86_400_000  # script.zig `zone_margin_ms`: the table sent around now
MODEL_SEGMENT = "m="
MICRO_USD = 1_000_000
ALGORITHMS = {"fixed": 0, "sliding": 1, "token_bucket": 2}  # budget.lua's numbers
IDENTITY_BYTES_MAX = 32  # match.zig: a value longer than a hash is hashed
SCAN_COUNT = 500
ROWS_MAX = 10_000
PEEK_KEYS_MAX = 100  # counters read per script call (one rule's keys share a cluster slot)

Algorithm = Literal["fixed", "sliding", "token_bucket"]


def budget_script() -> str:
    """calendar.lua + budget.lua as shipped in the package (contract/min/, as the filter
    embeds them), joined in the filter's order (script.zig `source`): one script, one SHA, the
    bridge's guard allows it."""
    contract = importlib.resources.files("tokenlimit") / "contract" / "min"
    return (contract / "calendar.lua").read_text() + (contract / "budget.lua").read_text()


# ---- counter keys (contract/counter_keys.json) ----------------------------------------------


def hash_value(value: str) -> str:
    """How the filter names a credential-like key value (match.zig `hashValue`)."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def identity(limit_type: str, value: str) -> str:
    """A caller's name in a counter key (match.zig `identity`): hashed when the value may be a
    credential, too long, or holds a character a key cannot carry; as-is otherwise."""
    if limit_type == "global":
        return "global"
    plain = all(" " < c < "\x7f" and c not in ":{}" for c in value)
    if limit_type in HASHED_TYPES or len(value.encode()) > IDENTITY_BYTES_MAX or not plain:
        return hash_value(value)
    return value


def key_source(limit_type: str, source: str) -> str:
    """The `<source>` part of a key from the configured `limit_by_*` value (config.zig): header
    names are case-insensitive, so lower-cased; consumer and global items have none."""
    if limit_type in SOURCELESS_TYPES:
        return ""
    if limit_type in ("header", "per_header"):
        return source.lower()
    return source


def counter_key(
    rule: str,
    limit_type: str,
    source: str,
    unit: str,
    window_s: int,
    value: str,
    model: str | None = None,
) -> str:
    """The counter the filter charges for a request whose key value is `value` (match.zig
    `counterKey`); `source` as configured, `unit` "tokens", "requests" or "cost"; `model` for
    a per-model budget."""
    part = key_source(limit_type, source)
    middle = f"{limit_type}:{part}" if part else limit_type
    named = counter_rule_name(rule)  # a name outside the plain set is hashed, as the filter does
    key = f"{KEY_PREFIX}{{{named}}}:{middle}:{unit}:{window_s}:{identity(limit_type, value)}"
    return key if model is None else f"{key}:{MODEL_SEGMENT}{identity('model', model)}"


@dataclass(frozen=True)
class Counter:
    rule: str
    limit_type: str
    source: str
    unit: str
    window_s: int
    identity: str
    key: str
    model: str = ""  # the model segment of a per-model budget ("" for others)

    @property
    def hashed(self) -> bool:
        """Whether the identity is a hash (shown shortened): always for credential-like types,
        and for other values that could not sit in a key as they are."""
        looks_hashed = len(self.identity) == 32 and all(
            c in "0123456789abcdef" for c in self.identity
        )
        return self.limit_type in HASHED_TYPES or looks_hashed


def parse_counter_key(key: str) -> Counter | None:
    """The parts of a counter key, or None for anything else under the prefix."""
    if not key.startswith(KEY_PREFIX + "{"):
        return None
    rule_end = key.find("}:", len(KEY_PREFIX))
    if rule_end < 0:
        return None
    rule = key[len(KEY_PREFIX) + 1 : rule_end]
    parts = key[rule_end + 2 :].split(":")
    model = ""
    if len(parts) >= 5 and parts[-1].startswith(MODEL_SEGMENT):
        model = parts.pop()[len(MODEL_SEGMENT) :]
    # type, [source], unit, window, identity (the identity itself never contains ':')
    if len(parts) == 4:
        limit_type, unit, window, caller = parts
        source = ""
    elif len(parts) >= 5:
        limit_type, unit, window, caller = parts[0], parts[-3], parts[-2], parts[-1]
        source = ":".join(parts[1:-3])
    else:
        return None
    if unit not in ALL_UNITS or not window.isdigit():
        return None
    return Counter(rule, limit_type, source, unit, int(window), caller, key, model)


# ---- what the policy says a counter may hold ------------------------------------------------

BudgetKey = tuple[str, str, str, str, int]  # rule, limit type, key source, unit, window s


@dataclass(frozen=True)
class LimitEntry:
    """One `limit_keys` entry's limit for one (unit, window)."""

    key: str  # as configured: a literal, `*`, `regexp:...`, an address or a CIDR
    limit: int


@dataclass(frozen=True)
class Budget:
    """A counter's algorithm and the limits the entries of its item give it, in order."""

    algorithm: Algorithm
    entries: tuple[LimitEntry, ...]
    # The rule's zone table when its time zone is not UTC (hours and days follow it too).
    calendar: CalendarTable | None = None

    def limit_for(self, counter: Counter) -> int | None:
        """The limit of the first entry that matched the caller, or None when the entries that
        may have matched disagree (a regexp or a CIDR whose caller is hashed here)."""
        possible: list[int] = []
        for entry in self.entries:
            if not counter.limit_type.startswith("per_") and counter.limit_type != "global":
                if identity(counter.limit_type, entry.key) == counter.identity:
                    possible.append(entry.limit)  # a literal: compared as the filter does
                    break
                continue
            possible.append(entry.limit)
            if entry.key in ("*", "global"):
                break  # matches every caller: later entries never apply
        return possible[0] if len(set(possible)) == 1 else None


def budgets_of(config: FilterConfig) -> dict[BudgetKey, Budget]:
    """Every counter a filter config can charge, by the parts its key names."""
    rules: list[BudgetFields] = [config] if config.rule_name is not None else []
    rules += config.rules or []
    entries: dict[BudgetKey, list[LimitEntry]] = defaultdict(list)
    algorithm_of: dict[str, Algorithm] = {}
    zones: dict[str, CalendarTable] = {}
    for rule in rules:
        assert rule.rule_name is not None  # validated: every rule is named
        named = counter_rule_name(rule.rule_name)
        algorithm_of[named] = _algorithm(rule.algorithm)
        if rule.calendar is not None and rule.calendar.zone != "UTC":
            zones[named] = rule.calendar
        for limit_type, source, key, windows in _limit_keys(rule):
            for unit, prefix in ALL_UNITS.items():
                for window, seconds in ALL_WINDOWS_S.items():
                    limit = getattr(windows, f"{prefix}_per_{window}")
                    if limit is not None:
                        budget_key = (named, limit_type, source, unit, seconds)
                        entries[budget_key].append(LimitEntry(key, _counted(unit, limit)))
    return {
        k: Budget(algorithm_of[k[0]], tuple(v), calendar=zones.get(k[0]))
        for k, v in entries.items()
    }


def _counted(unit: str, limit: float) -> int:
    """A limit in the counter's unit: cost limits (USD, ≤ 6 decimals) in micro-USD."""
    if unit == "cost":
        return int(Decimal(repr(limit)) * MICRO_USD)
    return int(limit)


def _algorithm(name: str | None) -> Algorithm:
    """A rule's algorithm; the model admits only the three names, absent means fixed."""
    return cast(Algorithm, name) if name in ALGORITHMS else "fixed"


def _limit_keys(rule: BudgetFields) -> Iterator[tuple[str, str, str, Any]]:
    if rule.global_threshold is not None:
        yield "global", "", "global", rule.global_threshold
    items: Sequence[RuleItem] = rule.rule_items or []
    for item in items:
        limit_type = item.kind.removeprefix("limit_by_")
        for entry in item.limit_keys:
            yield limit_type, key_source(limit_type, item.source), entry.key, entry


# ---- reading counters through the script ----------------------------------------------------


@dataclass(frozen=True)
class Row:
    counter: Counter
    algorithm: Algorithm | None  # None: no policy names this counter
    limit: int | None  # None: unknown (no policy, or entries that disagree)
    used: int | None  # None: a token bucket of unknown limit cannot be read
    remaining: int | None
    resets_in_s: float | None


def read_usage(
    client: redis.Redis,
    budgets: Mapping[BudgetKey, Budget] | None = None,
    rule: str | None = None,
    key_value: str | None = None,
) -> list[Row]:
    """Rows for every counter (of `rule`, of the caller with `key_value`) Redis holds now, read
    by budget.lua's `peek` on the server's clock with the algorithm and limit from `budgets`."""
    pattern = f"{KEY_PREFIX}{{{counter_rule_name(rule)}}}:*" if rule else f"{KEY_PREFIX}*"
    counters: dict[str, list[Counter]] = defaultdict(list)
    found = 0
    for raw_key in client.scan_iter(match=pattern, count=SCAN_COUNT):
        counter = parse_counter_key(raw_key.decode(errors="replace"))
        if counter is None:
            continue
        if key_value is not None and not _is_callers(counter, key_value):
            continue
        counters[counter.rule].append(counter)
        found += 1
        if found >= ROWS_MAX:
            break
    script = client.register_script(budget_script())
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    rows: list[Row] = []
    for same_rule in counters.values():
        for start in range(0, len(same_rule), PEEK_KEYS_MAX):
            rows += _peek(script, same_rule[start : start + PEEK_KEYS_MAX], budgets, now_ms)
    return sorted(
        rows, key=lambda r: (r.counter.rule, r.counter.identity, r.counter.unit, r.counter.window_s)
    )


def _is_callers(counter: Counter, key_value: str) -> bool:
    """Whether the counter is the caller's own (a global budget is everyone's, so not)."""
    if counter.limit_type == "global":
        return False
    return counter.identity == identity(counter.limit_type, key_value)


def _peek(
    script: Script,
    counters: list[Counter],
    budgets: Mapping[BudgetKey, Budget] | None,
    now_ms: int,
) -> list[Row]:
    """One `peek` for counters of one rule: every number is the script's. `now_ms` (the Redis
    server's clock) only picks the zone-table entries sent; the script reads its own clock."""
    plans: list[tuple[Counter, Algorithm | None, int | None, Budget | None]] = []
    for counter in counters:
        budget = (budgets or {}).get(
            (counter.rule, counter.limit_type, counter.source, counter.unit, counter.window_s)
        )
        if budget is None:
            plans.append((counter, None, None, None))
        else:
            plans.append((counter, budget.algorithm, budget.limit_for(counter), budget))
    readable = [
        p
        for p in plans
        if (p[1] != "token_bucket" or p[2] is not None) and _window_argument(p[0], p[3]) != 0
    ]
    args: list[int | str] = ["peek", 0]  # 0: the Redis server's clock, as the filter uses
    zone: CalendarTable | None = None
    for counter, algorithm, limit, budget in readable:
        # Fixed and sliding windows count without the limit; only `remaining` needs it.
        window = _window_argument(counter, budget)
        args += [ALGORITHMS[algorithm or "fixed"], window, limit or 0]
        if window < 0:
            zone = _zone(budget)
    if zone is not None:
        args.append(_zone_argument(zone, now_ms))
    reply: list[int] = script(keys=[p[0].key for p in readable], args=args) if readable else []
    numbers = {p[0].key: reply[1 + 3 * i : 4 + 3 * i] for i, p in enumerate(readable)}
    rows: list[Row] = []
    for counter, algorithm, limit, _ in plans:
        if counter.key not in numbers:  # unread: its limit is still the policy's
            rows.append(Row(counter, algorithm, limit, None, None, None))
            continue
        used, remaining, reset_ms = numbers[counter.key]
        known = None if limit is None else remaining
        rows.append(Row(counter, algorithm, limit, used, known, reset_ms / 1000))
    return rows


def _window_argument(counter: Counter, budget: Budget | None) -> int:
    """The window as budget.lua reads it (script.zig `windowArgument`): its length in ms, or
    the calendar code of a week, a month, or an hour or day in a zone other than UTC. 0 when
    it cannot be read: a week or month without a policy, whose zone only the policy knows."""
    code = CALENDAR_CODES.get(counter.window_s)
    if counter.window_s in CALENDAR_WINDOWS.values():
        return 0 if budget is None else code or 0
    if code is not None and budget is not None and budget.calendar is not None:
        return code
    return counter.window_s * 1000


def _zone(budget: Budget | None) -> CalendarTable:
    """The zone table a calendar window is read in: the rule's, else UTC's."""
    from tokenlimit.model.calendar import UTC_TABLE

    return budget.calendar if budget is not None and budget.calendar is not None else UTC_TABLE


def _zone_argument(table: CalendarTable, now_ms: int) -> str:
    """The last argument of a call with calendar windows (script.zig `appendZone`): the table's
    entries around now as `from_ms:offset_s,...`, the entry in effect before the range first."""
    low, high = now_ms - ZONE_MARGIN_MS, now_ms + ZONE_MARGIN_MS
    entries = list(table.transitions)
    first = max((i for i, (start, _) in enumerate(entries) if start <= low), default=0)
    last = max((i for i, (start, _) in enumerate(entries) if start <= high), default=0)
    return ",".join(f"{start}:{offset}" for start, offset in entries[first : last + 1])


def table_rows(rows: Iterable[Row]) -> list[tuple[str, ...]]:
    """The cells `tokenlimit usage` prints, one tuple per counter ("?" where unknown): cost
    counters in USD, the model of a per-model budget ("" for others)."""
    return [
        (
            r.counter.rule,
            r.counter.limit_type + (f" {r.counter.source}" if r.counter.source else ""),
            r.counter.identity[:12] + "…" if r.counter.hashed else r.counter.identity,
            r.counter.model,
            f"{_unit_name(r.counter.unit)}/"
            f"{WINDOW_NAMES.get(r.counter.window_s, f'{r.counter.window_s}s')}",
            _cell(r.used, r.counter.unit),
            _cell(r.limit, r.counter.unit),
            _cell(r.remaining, r.counter.unit),
            "?" if r.resets_in_s is None else f"{r.resets_in_s:.0f}s",
        )
        for r in rows
    ]


def _unit_name(unit: str) -> str:
    return "USD" if unit == "cost" else unit


def _cell(number: int | None, unit: str = "tokens") -> str:
    """A count as shown; micro-USD as dollars with every digit the counter holds."""
    if number is None:
        return "?"
    if unit == "cost":
        return f"${Decimal(number) / MICRO_USD:.6f}"
    return str(number)
