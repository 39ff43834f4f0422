"""The value types of single fields: their checks, and bounds from contract/limits.json.

Each type carries two halves of one rule: `Field(...)` metadata, which the CRD's schema is
generated from (tokenlimit.crd), and a `WrapValidator` that refuses a bad value with the
project's message (it quotes the value and says what is valid). Pydantic's own messages would
be correct but would not say what the filter accepts.

A field that is `None` in Python is a key left out of the document; `null` written in a
document is refused (`Present`), as the filter refuses it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, WrapValidator

from tokenlimit.model._checks import array as _array
from tokenlimit.model._checks import int_in as _int_in
from tokenlimit.model._checks import one_of as _one_of
from tokenlimit.model._checks import refusal as _error
from tokenlimit.model._checks import show
from tokenlimit.model.limits import (
    DEFAULT_OUTPUT_TOKENS_MAX,
    KEY_BYTES_MAX,
    LIMIT_MAX,
    PORT_MAX,
    REDIS_CREDENTIAL_BYTES_MAX,
    RULE_NAME_BYTES_MAX,
    SOURCE_NAME_BYTES_MAX,
    WEIGHT_MAX,
)

# Rule names that counter names carry as written: printable ASCII minus space : { }, at most
# PLAIN_RULE_NAME_BYTES_MAX bytes (every name valid before Higress's wider names were accepted).
PLAIN_RULE_NAME = re.compile(r"[\x21-\x39\x3b-\x7a\x7c\x7e]+")
PLAIN_RULE_NAME_BYTES_MAX = 64
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Kubernetes' (and DNS's) own limits, not the filter's: they are not in contract/limits.json.
DNS_SUBDOMAIN_CHARS_MAX = 253
DNS_LABEL_CHARS_MAX = 63
IP_HEADER_PREFIX = "from-header-"
IP_REMOTE_ADDR = "from-remote-addr"


def _refuse_null(value: Any, handler: Callable[[Any], Any]) -> Any:
    # `token_per_minute: null` would read as "unset" here and as a type error in the filter;
    # refusing it keeps the two halves in agreement.
    if value is None:
        raise _error("must not be null (leave the field out to unset it)")
    return handler(value)


def text(min_bytes: int, max_bytes: int | None) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if not isinstance(value, str):
            raise _error(f"must be a string, got {show(value)}")
        size = len(value.encode())
        if size < min_bytes or (max_bytes is not None and size > max_bytes):
            if min_bytes and size == 0:
                raise _error("must not be empty")
            raise _error(f"must be at most {max_bytes} bytes, got {size}")
        return handler(value)

    return WrapValidator(check)


def _check_rule_name(value: Any, handler: Callable[[Any], Any]) -> Any:
    # Any text, as Higress takes it (`:` and non-ASCII included); counter names carry a name
    # outside PLAIN_RULE_NAME hashed (filter_config.counter_rule_name).
    if not isinstance(value, str):
        raise _error(f"must be a string, got {show(value)}")
    if len(value.encode()) > RULE_NAME_BYTES_MAX:
        raise _error(f"must be at most {RULE_NAME_BYTES_MAX} bytes, got {len(value.encode())}")
    return handler(value)


def _check_ip_source(value: Any, handler: Callable[[Any], Any]) -> Any:
    text = value if isinstance(value, str) else ""
    if len(text.encode()) > SOURCE_NAME_BYTES_MAX:
        raise _error(f"must be at most {SOURCE_NAME_BYTES_MAX} bytes, got {len(text.encode())}")
    header = text.removeprefix(IP_HEADER_PREFIX)
    if text != IP_REMOTE_ADDR and not (text.startswith(IP_HEADER_PREFIX) and header):
        raise _error(
            f"must be {IP_REMOTE_ADDR} or {IP_HEADER_PREFIX}<header name>, got {show(value)}"
        )
    return handler(value)


def literal(expected: str) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if value != expected:
            raise _error(f"must be {expected}, got {show(value)}")
        return handler(value)

    return WrapValidator(check)


def enum(options: tuple[str, ...]) -> Any:
    """The schema half of `_one_of`: the CRD lists the values (the validator names them)."""
    return Field(json_schema_extra={"enum": list(options)})


def boolean(value: Any, handler: Callable[[Any], Any]) -> Any:
    if type(value) is not bool:
        raise _error(f"must be true or false, got {show(value)}")
    return handler(value)


def _weight(value: Any, handler: Callable[[Any], Any]) -> Any:
    # Thousandths are the filter's unit: more decimals would be silently rounded there.
    ok = type(value) in (int, float) and 0 <= value <= WEIGHT_MAX
    if ok and type(value) is float:
        ok = abs(value * 1000 - round(value * 1000)) < 1e-6
    if not ok:
        raise _error(
            f"must be a number from 0 to {WEIGHT_MAX} with at most 3 decimals, got {show(value)}"
        )
    return handler(value)


def _share(value: Any, handler: Callable[[Any], Any]) -> Any:
    # Thousandths, as the filter reads them; 0 would mean "admit nothing".
    ok = type(value) in (int, float) and 0 < value <= 1
    if ok and type(value) is float:
        ok = abs(value * 1000 - round(value * 1000)) < 1e-6 and round(value * 1000) > 0
    if not ok:
        raise _error(
            f"must be a number greater than 0 and at most 1, with at most 3 decimals, "
            f"got {show(value)}"
        )
    return handler(value)


def dns_name(pattern: re.Pattern[str], chars_max: int, what: str, chars: str) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if not (isinstance(value, str) and pattern.fullmatch(value) and len(value) <= chars_max):
            raise _error(
                f"must be a {what} ({chars}, at most {chars_max} characters), got {show(value)}"
            )
        return handler(value)

    return WrapValidator(check)


def matching(pattern: re.Pattern[str], chars_max: int, what: str) -> WrapValidator:
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        if not (isinstance(value, str) and pattern.fullmatch(value) and len(value) <= chars_max):
            raise _error(f"must be {what}, got {show(value)}")
        return handler(value)

    return WrapValidator(check)


Present = WrapValidator(_refuse_null)
TokenLimit = Annotated[int, Field(ge=1, le=LIMIT_MAX), _int_in(1, LIMIT_MAX)]
OptTokenLimit = Annotated[TokenLimit | None, Present]
RuleName = Annotated[str, Field(max_length=RULE_NAME_BYTES_MAX)]
OptRuleName = Annotated[Annotated[RuleName, WrapValidator(_check_rule_name)] | None, Present]
SourceName = Annotated[
    str, Field(min_length=1, max_length=SOURCE_NAME_BYTES_MAX), text(1, SOURCE_NAME_BYTES_MAX)
]
OptSourceName = Annotated[SourceName | None, Present]
OptConsumer = Annotated[
    Annotated[str, Field(max_length=SOURCE_NAME_BYTES_MAX), text(0, SOURCE_NAME_BYTES_MAX)] | None,
    Present,
]
OptIpSource = Annotated[
    Annotated[str, Field(max_length=SOURCE_NAME_BYTES_MAX), WrapValidator(_check_ip_source)] | None,
    Present,
]
OptCredential = Annotated[
    Annotated[
        str, Field(max_length=REDIS_CREDENTIAL_BYTES_MAX), text(0, REDIS_CREDENTIAL_BYTES_MAX)
    ]
    | None,
    Present,
]
Key = Annotated[str, Field(min_length=1, max_length=KEY_BYTES_MAX), text(1, KEY_BYTES_MAX)]
Port = Annotated[int, Field(ge=1, le=PORT_MAX), _int_in(1, PORT_MAX)]
ADMISSIONS = ("postpaid", "reserve")
ALGORITHMS = ("fixed", "sliding", "token_bucket")
FAILURE_MODES = ("open", "closed", "local")
OptAdmission = Annotated[Annotated[str, enum(ADMISSIONS), _one_of(ADMISSIONS)] | None, Present]
OptAlgorithm = Annotated[Annotated[str, enum(ALGORITHMS), _one_of(ALGORITHMS)] | None, Present]
OptFailureMode = Annotated[
    Annotated[str, enum(FAILURE_MODES), _one_of(FAILURE_MODES)] | None, Present
]
OptBool = Annotated[Annotated[bool, WrapValidator(boolean)] | None, Present]
OptOutputTokens = Annotated[
    Annotated[
        int,
        Field(ge=0, le=DEFAULT_OUTPUT_TOKENS_MAX),
        _int_in(0, DEFAULT_OUTPUT_TOKENS_MAX),
    ]
    | None,
    Present,
]
OptWeight = Annotated[
    Annotated[float | int, Field(ge=0, le=WEIGHT_MAX), WrapValidator(_weight)] | None, Present
]
OptShare = Annotated[
    Annotated[float | int, Field(gt=0, le=1), WrapValidator(_share)] | None, Present
]
Matches = Annotated[list[Annotated[str, text(0, None)]], _array(0, None, "strings")]
OptMatches = Annotated[Matches | None, Present]


SUBDOMAIN_NAME = dns_name(
    DNS_SUBDOMAIN, DNS_SUBDOMAIN_CHARS_MAX, "DNS subdomain", "lowercase letters, digits, '-', '.'"
)
LABEL_NAME = dns_name(DNS_LABEL, DNS_LABEL_CHARS_MAX, "DNS label", "lowercase letters, digits, '-'")
SubdomainName = Annotated[
    str,
    Field(min_length=1, max_length=DNS_SUBDOMAIN_CHARS_MAX, pattern=f"^{DNS_SUBDOMAIN.pattern}$"),
    SUBDOMAIN_NAME,
]
LabelName = Annotated[
    str,
    Field(min_length=1, max_length=DNS_LABEL_CHARS_MAX, pattern=f"^{DNS_LABEL.pattern}$"),
    LABEL_NAME,
]
