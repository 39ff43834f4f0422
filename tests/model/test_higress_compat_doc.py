"""docs/higress-compat.md keeps its promise: every row marked "same" names tests that exist.

A row's last cell is its verdict. One that says "same" must name at least one test: a
`file::function` under tests/ (the function must exist in that file), a contract vector
("vector X": X must be a name in contract/config.json), or a file under tests/ that exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "higress-compat.md"
TESTS = ROOT / "tests"
VECTOR_NAMES = {v["name"] for v in json.loads((ROOT / "contract" / "config.json").read_text())}


def verdicts() -> list[str]:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return [row[-1] for row in cells if row[-1] not in ("verdict",) and set(row[-1]) != {"-"}]


def test_the_doc_covers_both_versions_and_every_section() -> None:
    text = DOC.read_text()
    for needed in ("1.0.x", "2.0.1", "_rules_", "rule_items", "redis", "X-TokenRateLimit-Reset"):
        assert needed in text, needed
    assert len(verdicts()) >= 40


def test_every_row_marked_same_names_tests_that_exist() -> None:
    same = [v for v in verdicts() if v.startswith("same") or "same (" in v]
    assert len(same) >= 25
    for verdict in same:
        functions = re.findall(r"`([\w/]+\.py)::(\w+)`", verdict)
        files = re.findall(r"`([\w/]+\.py)`", verdict)
        vectors = [
            name
            for group in re.findall(r'vectors? ((?:"[^"]+"(?:, )?)+)', verdict)
            for name in re.findall(r'"([^"]+)"', group)
        ]
        assert functions or files or vectors, f"names no test: {verdict}"
        for file, function in functions:
            source = (TESTS / file).read_text()
            assert f"def {function}(" in source, f"{file}::{function} does not exist"
        for file in files:
            assert (TESTS / file).is_file(), f"{file} does not exist"
        for name in vectors:
            assert name in VECTOR_NAMES, f"no contract vector named {name!r}"
