# tokenlimit — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ZIG    := $(BIN)/python -m ziglang
WASM_DIR := controlplane/tokenlimit/wasm
WASM   := $(WASM_DIR)/tokenlimit.wasm $(WASM_DIR)/tokenlimit-higress.wasm
FILTER_SOURCES := $(shell find filter/src -name '*.zig') filter/build.zig filter/unit_tests.zig \
                  $(wildcard contract/*)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: all venv wasm test test-zig test-python demo lint bench clean

all: wasm

# The virtualenv is rebuilt when pyproject.toml changes (stamp file).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

$(WASM): $(BIN)/.installed $(FILTER_SOURCES)
	cd filter && ../$(ZIG) build --summary none
	mkdir -p $(WASM_DIR)
	cp filter/zig-out/bin/tokenlimit.wasm filter/zig-out/bin/tokenlimit-higress.wasm $(WASM_DIR)/

wasm: $(WASM)

test-zig: $(BIN)/.installed
	cd filter && ../$(ZIG) build test --summary all

test-python: $(WASM)
	$(BIN)/python -m pytest -q

test: lint test-zig test-python

demo: $(WASM)
	$(BIN)/python -m tokenlimit.dev.demo

# The gates `make test` runs first: style (ruff, zig fmt) and types (mypy --strict, configured
# in pyproject.toml). Each failure names the file and line.
lint: $(BIN)/.installed
	$(BIN)/ruff check controlplane tests bench
	$(BIN)/ruff format --check controlplane tests bench
	$(BIN)/mypy
	cd filter && ../$(ZIG) fmt --check src build.zig unit_tests.zig ../tests/support/abi_probe.zig ../tests/support/abi_probe_host.zig

bench: $(WASM)
	$(BIN)/python bench/overhead.py

clean:
	rm -rf filter/zig-out filter/.zig-cache $(WASM) .pytest_cache
