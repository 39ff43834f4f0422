"""`usage_path` (policy: `usagePath`, issue 16): where the filter answers `GET` with the
caller's own usage (filter/src/http/usage_endpoint.zig). Unset: /tokenlimit/v1/usage; "" turns
the endpoint off. The same bound and characters as the filter's parser (config/parse.zig), so
both refuse the same paths (contract/config.json's "usage: ..." vectors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final

from pydantic import WrapValidator

from tokenlimit.model._checks import refusal as _error
from tokenlimit.model._checks import show
from tokenlimit.model.fields import Present
from tokenlimit.model.limits import SOURCE_NAME_BYTES_MAX

USAGE_PATH_DEFAULT: Final = "/tokenlimit/v1/usage"


def usage_path_problem(path: str) -> str | None:
    """Why the filter would refuse `path` as `usage_path`, or None."""
    if len(path.encode()) > SOURCE_NAME_BYTES_MAX:
        return f"must be at most {SOURCE_NAME_BYTES_MAX} bytes, got {len(path.encode())}"
    if path == "":
        return None
    if not path.startswith("/"):
        return f'must start with /, got "{path}" ("" turns the usage endpoint off)'
    if any(c <= " " or c >= "\x7f" or c in "?#" for c in path):
        return f'must be printable ASCII without spaces, ? or #, got "{path}"'
    return None


def _check(value: Any, handler: Callable[[Any], Any]) -> Any:
    if not isinstance(value, str):
        raise _error(f"must be a string, got {show(value)}")
    problem = usage_path_problem(value)
    if problem is not None:
        raise _error(problem)
    return handler(value)


OptUsagePath = Annotated[Annotated[str, WrapValidator(_check)] | None, Present]
