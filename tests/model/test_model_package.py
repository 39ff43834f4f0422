"""The model package: the bottom of the pipeline, and the surface other modules import."""

from __future__ import annotations

import json
import subprocess
import sys

import tokenlimit.model


def modules_loaded_by(statement: str) -> list[str]:
    """The tokenlimit modules a fresh interpreter has loaded after `statement`."""
    code = (
        f"import json, sys; {statement}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tokenlimit'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_importing_the_model_imports_no_renderer() -> None:
    """model ▸ render ▸ apply: the model imports nothing above it, so no renderer can be part
    of an import cycle with it (model.py <-> fallback/model.py <-> render/envoy.py was one)."""
    loaded = modules_loaded_by("import tokenlimit.model")
    assert "tokenlimit.model.policy" in loaded
    assert not [m for m in loaded if m.startswith("tokenlimit.render")]
    assert [m for m in loaded if m != "tokenlimit" and not m.startswith("tokenlimit.model")] == []


def test_every_name_in_all_is_importable() -> None:
    for name in tokenlimit.model.__all__:
        assert getattr(tokenlimit.model, name) is not None, name
    assert len(set(tokenlimit.model.__all__)) == len(tokenlimit.model.__all__)
