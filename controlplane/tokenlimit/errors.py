"""The root of the command line's error family, apart from the CLI package.

`TokenlimitError` is what every `tokenlimit` command raises for a failure that is not a usage
error (click prints `Error: <message>` and exits 1). It lives here, not in cli/_common.py
(which re-exports it), so a command defined outside tokenlimit.cli (the operator) can
subclass it without importing the CLI package that registers that very command.
"""

from __future__ import annotations

import click


class TokenlimitError(click.ClickException):
    """A failure that is not a usage error (exit 1)."""
