"""contract/min/*.lua, the scripts the filter embeds and the bridge allows (issue 17, module size):
in step with contract/*.lua, and the same Lua.

The minifier keeps strings byte for byte and every line in place; these tests run the tricky
cases on a real Redis (Lua 5.1) both ways and compare what the scripts return.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.redis_server import RedisServer
from tokenlimit.bridge.guard import Scripts, contract_scripts
from tokenlimit.contract_min import (
    MIN_FOLDER,
    REGENERATE,
    SCRIPTS,
    LuaSyntaxError,
    generate,
    main,
    minify,
)

CONTRACT = Path(__file__).resolve().parents[2] / "contract"

# Every construct whose bytes must survive or whose tokens must stay apart.
TRICKY = """-- a header comment
--[==[ a long comment with ]] inside
and two lines ]==]
local t = {'--not a comment', "a\\"b -- c", [[ -- kept
  as written ]], [=[ ]] ]=]}
local s = 'x' .. 'y'  -- trailing comment
local n = 1 .. 2 .. .5  --[[ short long comment ]] local m = 0x1F
local d = 3 - -2
local e = 1e3 + 2.5e-1 + #t + 0xe + 1 + 0xe+1
local u = {a = {b = 1}}
return {t[1], t[2], t[3], t[4], s, n, m, d, e, u.a.b, #t ~= 4 and 1 or 0}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[redis.Redis]:
    with RedisServer() as running:
        yield redis.Redis.from_url(running.url)


def test_committed_min_files_are_what_the_minifier_makes() -> None:
    folder = CONTRACT / MIN_FOLDER
    for name, text in generate(CONTRACT).items():
        path = folder / name
        assert path.is_file() and path.read_text() == text, (
            f"contract/{MIN_FOLDER}/{name} is stale (contract/{name} changed): run {REGENERATE}"
        )
    assert sorted(p.name for p in folder.glob("*.lua")) == sorted(SCRIPTS)


def test_check_mode_names_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / MIN_FOLDER).mkdir()
    for name in SCRIPTS:
        (tmp_path / name).write_text((CONTRACT / name).read_text())
    assert main([str(tmp_path), "--check"]) == 1
    assert REGENERATE in capsys.readouterr().err
    assert main([str(tmp_path)]) == 0
    assert main([str(tmp_path), "--check"]) == 0


def test_minified_scripts_are_smaller_and_keep_every_line() -> None:
    for name, text in generate(CONTRACT).items():
        source = (CONTRACT / name).read_text()
        assert len(text) < 0.7 * len(source), name
        assert text.count("\n") == source.count("\n"), name
        assert "--" not in text.replace("'--", "").replace('"--', ""), name


def test_strings_are_kept_and_comments_dropped() -> None:
    out = minify(TRICKY)
    for kept in ("'--not a comment'", '"a\\"b -- c"', "[[ -- kept\n  as written ]]", "[=[ ]] ]=]"):
        assert kept in out
    for dropped in ("header comment", "long comment", "trailing comment", "short long"):
        assert dropped not in out
    assert "3- -2" in out and "n=1 .. 2 .. .5 local" in out
    assert out.count("\n") == TRICKY.count("\n")


def test_minified_lua_returns_what_the_source_returns(server: redis.Redis) -> None:
    assert server.eval(minify(TRICKY), 0) == server.eval(TRICKY, 0)


def test_a_redis_error_names_the_source_line(server: redis.Redis) -> None:
    source = "-- one\n--[[ two\nthree ]]\nlocal x = 1\n\nreturn nil + x  -- line 6\n"
    for script in (source, minify(source)):
        with pytest.raises(redis.ResponseError, match=r"user_script:6:"):
            server.eval(script, 0)


def test_unclosed_strings_and_comments_are_refused() -> None:
    for bad in ("local s = 'x", "local s = [[x", "--[[ x", 'local s = "x\ny"', "a = @"):
        with pytest.raises(LuaSyntaxError):
            minify(bad)


def test_the_bridge_allows_exactly_the_minified_scripts() -> None:
    scripts = Scripts(contract_scripts())
    minified = {name: (CONTRACT / MIN_FOLDER / name).read_bytes() for name in SCRIPTS}
    allowed = [*minified.values(), minified["calendar.lua"] + minified["budget.lua"]]
    assert scripts.shas == {hashlib.sha1(body).hexdigest().encode() for body in allowed}
    source = (CONTRACT / "budget.lua").read_bytes()
    assert scripts.refusal([b"EVAL", source, b"0"]) is not None  # nothing sends the readable one


def test_both_modules_embed_the_minified_scripts_only(
    filter_wasm: Path, higress_wasm: Path
) -> None:
    """The module size (issue 17): the readable scripts' comments are not in the module."""
    minified = {name: (CONTRACT / MIN_FOLDER / name).read_bytes() for name in SCRIPTS}
    source = (CONTRACT / "budget.lua").read_text()
    comment = next(
        line for line in source.splitlines() if line.startswith("-- ") and len(line) > 40
    )
    for module in (filter_wasm, higress_wasm):
        data = module.read_bytes()
        assert minified["calendar.lua"] + minified["budget.lua"] in data, module.name
        assert minified["higress_compat.lua"] in data and minified["cache.lua"] in data
        assert comment.encode() not in data, module.name
