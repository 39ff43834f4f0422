"""Builds the filter modules into the package when they are not built yet, so that a plain
`pip install .` ships them (DESIGN.md §2.2). `make wasm` builds them the same way."""

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
WASM_DIR = ROOT / "controlplane" / "tokenlimit" / "wasm"
MODULES = ("tokenlimit.wasm", "tokenlimit-higress.wasm")


class BuildPyWithFilter(build_py):
    def run(self) -> None:
        if not all((WASM_DIR / name).is_file() for name in MODULES):
            # ziglang is a build requirement (pyproject.toml), so its compiler is here.
            filter_dir = ROOT / "filter"
            subprocess.run(
                [sys.executable, "-m", "ziglang", "build", "--summary", "none"],
                cwd=filter_dir,
                check=True,
            )
            for name in MODULES:
                shutil.copyfile(filter_dir / "zig-out" / "bin" / name, WASM_DIR / name)
        super().run()


setup(cmdclass={"build_py": BuildPyWithFilter})
