# resumable_fast: `make demo` runs the demo on the embedded default,
# `make test` runs every test. Both set up everything they need from scratch.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE_DIR ?= $(HOME)/.cache/resumable_fast
S2LITE_VERSION := 0.42.7
S2LITE_ROOT := $(CACHE_DIR)/s2-lite-$(S2LITE_VERSION)
S2LITE_BIN := $(S2LITE_ROOT)/bin/server
EXTENSION_STAMP := $(VENV)/.extension-built
RUST_SOURCES := $(wildcard rust/*.rs) Cargo.toml Cargo.lock pyproject.toml
INTEROP_DIR := tests/interop

export S2LITE_BIN

.PHONY: all demo test test-rust lint pytest venv develop s2-lite interop-deps chromium lock bench-core bench-transport bench-sessions bench-disk bench-deps bench bench-quick redis-server tinyproxy clean

all: develop

$(VENV)/.deps-installed: requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade --require-hashes -r requirements/dev.txt
	touch $@

venv: $(VENV)/.deps-installed

$(EXTENSION_STAMP): $(VENV)/.deps-installed $(RUST_SOURCES)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --locked
	touch $@

develop: $(EXTENSION_STAMP)

# s2-lite is built once into a cache outside the repository and reused.
$(S2LITE_BIN):
	@echo "building s2-lite $(S2LITE_VERSION) into $(S2LITE_ROOT) (first time only: 10-25 minutes)"
	cargo install --locked s2-lite --version $(S2LITE_VERSION) --root $(S2LITE_ROOT)

s2-lite: $(S2LITE_BIN)

$(INTEROP_DIR)/node_modules/.installed: $(INTEROP_DIR)/package.json $(INTEROP_DIR)/package-lock.json
	cd $(INTEROP_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

interop-deps: $(INTEROP_DIR)/node_modules/.installed

# The browser test drives Debian's chromium (Playwright never downloads a browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The proxy tests run Debian's tinyproxy on loopback.
tinyproxy:
	@command -v tinyproxy >/dev/null 2>&1 || { \
		echo "installing Debian's tinyproxy for the proxy tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy; }

test-rust:
	cargo test --locked

lint: develop
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	cargo clippy --locked --all-targets --features python -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy

pytest: develop s2-lite interop-deps chromium tinyproxy
	$(BIN)/pytest -q

test: develop s2-lite interop-deps chromium tinyproxy
	$(MAKE) test-rust
	$(MAKE) lint
	$(MAKE) pytest

demo: develop
	$(BIN)/python -m resumable_fast demo

bench-core: develop
	$(BIN)/python benches/bench_core.py

bench-transport: develop s2-lite
	$(BIN)/python benches/bench_transport.py

# Issue 15: CPU per batch of unary JSON appends, S2 append sessions over HTTP/1.1
# and unary protobuf appends, against s2-lite on loopback.
bench-sessions: develop s2-lite
	$(BIN)/python benches/bench_append_session.py

bench-disk: develop
	$(BIN)/python benches/bench_embedded_disk.py

BENCH_NODE_DIR := benches/node

$(VENV)/.bench-deps-installed: $(VENV)/.deps-installed requirements/bench.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/bench.txt
	touch $@

$(BENCH_NODE_DIR)/node_modules/.installed: $(BENCH_NODE_DIR)/package.json $(BENCH_NODE_DIR)/package-lock.json
	cd $(BENCH_NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing Debian's redis-server for the Redis peer"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

bench-deps: develop s2-lite redis-server $(VENV)/.bench-deps-installed $(BENCH_NODE_DIR)/node_modules/.installed

# Every peer side by side; writes benches/results/<date>.md and .png.
bench: bench-deps
	$(BIN)/python benches/harness.py

bench-quick: bench-deps
	$(BIN)/python benches/harness.py --quick

# Regenerate the hashed Python locks from requirements/*.in.
lock:
	$(PYTHON) -m venv /tmp/resumable-fast-lock
	/tmp/resumable-fast-lock/bin/pip install --quiet uv
	/tmp/resumable-fast-lock/bin/uv pip compile --python-version 3.11 --generate-hashes \
		--quiet requirements/dev.in -o requirements/dev.txt
	/tmp/resumable-fast-lock/bin/uv pip compile --python-version 3.11 --generate-hashes \
		--quiet requirements/bench.in -c requirements/dev.txt -o requirements/bench.txt

clean:
	rm -rf $(VENV) target $(INTEROP_DIR)/node_modules
