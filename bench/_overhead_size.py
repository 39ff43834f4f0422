"""Where a .wasm module's bytes go: section sizes and the largest functions (issue 17).

Reads a module built with names kept (`cd filter && zig build -Dstrip=false --prefix DIR`): the
code section gives each function body's size, the `name` custom section its name. Nothing but
the standard library, so it runs wherever the benchmarks run (no wabt, no node).

    .venv/bin/python bench/_overhead_size.py MODULE.wasm [--top 40] [--group]

`--group` sums function sizes by a name prefix (the Zig namespace up to the last `.`), which
is how generic instantiations and comptime-generated tables show up. The data section is split
into the embedded contract scripts (contract/min/*.lua, found by their bytes), text (runs of
8+ printable bytes: messages, names) and the rest (tables, zero-filled globals); a stripped
module works for that part too.
"""

from __future__ import annotations

import argparse
import collections
import re
from dataclasses import dataclass, field
from pathlib import Path

CONTRACT_MIN = Path(__file__).resolve().parents[1] / "contract" / "min"
TEXT_RUN = re.compile(rb"[\x20-\x7e\t\n]{8,}")

SECTION_NAMES = {
    0: "custom",
    1: "type",
    2: "import",
    3: "function",
    4: "table",
    5: "memory",
    6: "global",
    7: "export",
    8: "start",
    9: "element",
    10: "code",
    11: "data",
    12: "datacount",
}


class Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def u8(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uleb(self) -> int:
        result = shift = 0
        while True:
            byte = self.u8()
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    def name(self) -> str:
        length = self.uleb()
        text = self.data[self.pos : self.pos + length].decode("utf-8", "replace")
        self.pos += length
        return text


@dataclass
class Module:
    sections: list[tuple[str, int]]  # (name, bytes), in order
    imported_functions: int
    bodies: list[int]  # code-section body sizes, by defined function index
    names: dict[int, str]  # function index (imports first) -> name
    data: list[bytes] = field(default_factory=list)  # the data segments' bytes


def parse(data: bytes) -> Module:
    assert data[:4] == b"\0asm", "not a wasm module"
    r = Reader(data, 8)
    sections: list[tuple[str, int]] = []
    imported = 0
    bodies: list[int] = []
    names: dict[int, str] = {}
    segments: list[bytes] = []
    while r.pos < len(data):
        section_id = r.u8()
        size = r.uleb()
        start = r.pos
        label = SECTION_NAMES.get(section_id, str(section_id))
        if section_id == 0:
            label = f"custom:{Reader(data, start).name()}"
        sections.append((label, size))
        if section_id == 2:
            imported = count_function_imports(Reader(data, start))
        elif section_id == 10:
            body = Reader(data, start)
            for _ in range(body.uleb()):
                length = body.uleb()
                bodies.append(length)
                body.pos += length
        elif label == "custom:name":
            names = function_names(data, start, start + size)
        elif section_id == 11:
            segments = data_segments(Reader(data, start))
        r.pos = start + size
    return Module(sections, imported, bodies, names, segments)


def data_segments(r: Reader) -> list[bytes]:
    """Active segments with an i32.const offset (what a Zig wasm32 module has)."""
    segments: list[bytes] = []
    for _ in range(r.uleb()):
        flags = r.uleb()
        if flags == 2:
            r.uleb()  # memory index
        if flags != 1:
            r.pos += 1  # i32.const
            r.uleb()
            r.pos += 1  # end
        length = r.uleb()
        segments.append(r.data[r.pos : r.pos + length])
        r.pos += length
    return segments


def data_rows(segments: list[bytes]) -> list[tuple[str, int]]:
    """The data section by kind: embedded scripts, text, the rest."""
    data = b"".join(segments)
    rest = data
    rows: list[tuple[str, int]] = []
    for script in sorted(CONTRACT_MIN.glob("*.lua")):
        body = script.read_bytes()
        if body and body in rest:
            rows.append((f"contract/min/{script.name}", len(body)))
            rest = rest.replace(body, b"", 1)
    text = sum(len(run) for run in TEXT_RUN.findall(rest))
    rows.append(("text (8+ printable bytes)", text))
    rows.append(("tables, zeros, short strings", len(rest) - text))
    return rows


def count_function_imports(r: Reader) -> int:
    functions = 0
    for _ in range(r.uleb()):
        r.name()
        r.name()
        kind = r.u8()
        if kind == 0:
            r.uleb()
            functions += 1
        elif kind == 1:  # table: reftype, limits
            r.u8()
            skip_limits(r)
        elif kind == 2:
            skip_limits(r)
        elif kind == 3:  # global: valtype, mutability
            r.u8()
            r.u8()
    return functions


def skip_limits(r: Reader) -> None:
    flags = r.u8()
    r.uleb()
    if flags & 1:
        r.uleb()


def function_names(data: bytes, start: int, end: int) -> dict[int, str]:
    r = Reader(data, start)
    r.name()  # "name"
    names: dict[int, str] = {}
    while r.pos < end:
        kind = r.u8()
        size = r.uleb()
        sub_end = r.pos + size
        if kind == 1:
            for _ in range(r.uleb()):
                index = r.uleb()
                names[index] = r.name()
        r.pos = sub_end
    return names


def group_of(name: str) -> str:
    base = name.split("__", 1)[0].split("(", 1)[0]
    return base.rsplit(".", 1)[0] if "." in base else base


def report(path: Path, top: int, group: bool) -> str:
    module = parse(path.read_bytes())
    out = [f"{path.name}: {path.stat().st_size:,} bytes", "", "| section | bytes |", "|---|---:|"]
    out += [f"| {name} | {size:,} |" for name, size in module.sections]
    out += ["", "| data | bytes |", "|---|---:|"]
    out += [f"| {name} | {size:,} |" for name, size in data_rows(module.data)]
    named = [
        (size, module.names.get(module.imported_functions + i, f"func{i}"))
        for i, size in enumerate(module.bodies)
    ]
    out += ["", f"{len(named)} functions, {sum(s for s, _ in named):,} bytes of code", ""]
    if group:
        groups: collections.Counter[str] = collections.Counter()
        for size, name in named:
            groups[group_of(name)] += size
        out += ["| bytes | namespace |", "|---:|---|"]
        out += [f"| {size:,} | {name} |" for name, size in groups.most_common(top)]
    else:
        out += ["| bytes | function |", "|---:|---|"]
        out += [f"| {size:,} | {name[:110]} |" for size, name in sorted(named, reverse=True)[:top]]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--group", action="store_true", help="sum by namespace")
    args = parser.parse_args()
    print(report(args.module, args.top, args.group))


if __name__ == "__main__":
    main()
