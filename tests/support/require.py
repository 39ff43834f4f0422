"""A program a test needs: missing, it fails the test with how to install it (never skips).

Here rather than in tests/conftest.py so a test module imports it from a module of its own:
`from conftest import ...` resolves to whichever conftest.py pytest imported last, which breaks
as soon as a test folder has a conftest.py of its own.
"""

from __future__ import annotations

import shutil

import pytest


def require_binary(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not on PATH: {hint}", pytrace=False)
    return found
