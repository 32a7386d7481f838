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

.PHONY: all demo demo-s2 test test-rust lint pytest venv develop s2-lite interop-deps chromium lock bench-core bench-transport bench-sessions bench-disk bench-stalled bench-deps bench bench-quick redis-server tinyproxy wheel test-wheel lint-workflows clean

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
	$(BIN)/ruff check python tests benches tools
	$(BIN)/ruff format --check python tests benches tools
	$(BIN)/mypy
	$(BIN)/python tools/check_private_access.py
	$(BIN)/python -m mypy.stubtest resumable_fast._core --allowlist tools/stubtest/allowlist.txt

pytest: develop s2-lite interop-deps chromium tinyproxy
	$(BIN)/pytest -q

test: develop s2-lite interop-deps chromium tinyproxy
	$(MAKE) test-rust
	$(MAKE) lint
	$(MAKE) pytest

demo: develop
	$(BIN)/python -m resumable_fast demo

# The demo as two replicas (ports 8000 and 8001) behind one s2-lite on port
# 4566, its basin set up by `resumable-fast s2 setup`; Ctrl-C stops all three.
demo-s2: develop s2-lite
	$(BIN)/python tools/demo_s2.py --s2lite-bin $(S2LITE_BIN)

bench-core: develop
	$(BIN)/python benches/bench_core.py

bench-transport: develop s2-lite
	$(BIN)/python benches/experiments/bench_transport.py

# Issue 15: CPU per batch of unary JSON appends, S2 append sessions over HTTP/1.1
# and unary protobuf appends, against s2-lite on loopback.
bench-sessions: develop s2-lite
	$(BIN)/python benches/experiments/bench_append_session.py

bench-disk: develop
	$(BIN)/python benches/bench_embedded_disk.py

# Issue 21: 2,000 stalled resume_sse connections against Starlette's own floor.
bench-stalled: develop
	$(BIN)/python benches/bench_stalled_sse.py

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
	$(BIN)/python benches/harness.py $(BASELINE_OPTION)

# BASELINE=<revision> runs that revision of the library beside this tree in
# the same run (benches/baseline.py), e.g. make bench-quick BASELINE=main.
BASELINE ?=
BASELINE_OPTION := $(if $(BASELINE),--baseline $(BASELINE))

bench-quick: bench-deps
	$(BIN)/python benches/harness.py --quick $(BASELINE_OPTION)

# Issue 17: the wheel users install. abi3 (one wheel for CPython 3.10 and later),
# manylinux2014 (glibc 2.17, so Debian 11, Ubuntu 20.04, RHEL 8 and Amazon Linux 2
# take it): zig links against glibc 2.17's symbols from this machine, for x86_64
# and, cross-compiled, aarch64. auditwheel must find each wheel's tag right.
DIST := dist
WHEEL_ARCHES := x86_64 aarch64
# test-wheel installs the wheel into a fresh venv of each (pyenv's builds here).
WHEEL_PYTHONS := 3.10 3.11 3.12 3.13
PYENV_VERSIONS ?= $(HOME)/.pyenv/versions
# The newest pyenv build of a minor version, in a recipe: $(call pyenv_python,3.12).
pyenv_python = $$(ls -d $(PYENV_VERSIONS)/$(1).*/bin/python 2>/dev/null | sort -V | tail -n 1)
# The sdist is built from source (Rust) and installed into this one.
SDIST_PYTHON := 3.11
# Outside the source tree, one per clone.
WHEEL_TEST_DIR ?= /tmp/resumable-fast-wheel-test$(subst /,-,$(CURDIR))

$(VENV)/.release-deps-installed: $(VENV)/.deps-installed requirements/release.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/release.txt
	touch $@

# maturin finds zig through the venv's Python (the ziglang package) on PATH.
wheel: $(VENV)/.release-deps-installed
	rustup target add aarch64-unknown-linux-gnu
	rm -rf $(DIST)
	for arch in $(WHEEL_ARCHES); do \
		PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin build --release --locked --zig \
			--compatibility manylinux2014 --target $$arch-unknown-linux-gnu --out $(DIST) \
			|| exit 1; \
	done
	$(BIN)/maturin sdist --out $(DIST)
	for arch in $(WHEEL_ARCHES); do \
		wheel=$$(ls $(DIST)/*-cp310-abi3-manylinux2014_$$arch.manylinux_2_17_$$arch.whl) || exit 1; \
		$(BIN)/auditwheel show $$wheel | tee $(DIST)/auditwheel-$$arch.txt; \
		tr -s ' \n' ' ' < $(DIST)/auditwheel-$$arch.txt \
			| grep -q 'consistent with the following platform tag: "manylinux_2_17_'$$arch'"' \
			|| { echo "auditwheel disagrees with the manylinux_2_17_$$arch tag" >&2; exit 1; }; \
	done

# Each venv gets the wheel's declared dependencies (runtime and `web`) from the
# hashed lock, then the wheel with no index: pip fails if the wheel asks for
# anything the lock lacks. The smoke checks run from outside the source tree.
# Then the sdist, built from source (Rust) with the locked maturin, in one more venv.
test-wheel: wheel s2-lite
	rm -rf $(WHEEL_TEST_DIR)
	mkdir -p $(WHEEL_TEST_DIR)
	cp tests/wheel_smoke.py $(WHEEL_TEST_DIR)/
	wheel=$$(ls $(abspath $(DIST))/*-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl) || exit 1; \
	for version in $(WHEEL_PYTHONS); do \
		python=$(call pyenv_python,$$version); \
		test -x "$$python" || { echo "test-wheel: no Python $$version under $(PYENV_VERSIONS)" >&2; exit 1; }; \
		venv=$(WHEEL_TEST_DIR)/venv-$$version; \
		"$$python" -m venv $$venv \
		&& $$venv/bin/python -m pip install --quiet --require-hashes -r requirements/wheel-test.txt \
		&& $$venv/bin/python -m pip install --isolated --quiet --no-index "$$wheel[web]" \
		&& $$venv/bin/python -m pip check \
		&& (cd $(WHEEL_TEST_DIR) && $$venv/bin/python -I wheel_smoke.py $(S2LITE_BIN)) \
		|| { echo "test-wheel: the wheel failed on Python $$version" >&2; exit 1; }; \
	done
	sdist=$$(ls $(abspath $(DIST))/*.tar.gz) || exit 1; \
	python=$(call pyenv_python,$(SDIST_PYTHON)); \
	test -x "$$python" || { echo "test-wheel: no Python $(SDIST_PYTHON) under $(PYENV_VERSIONS)" >&2; exit 1; }; \
	venv=$(WHEEL_TEST_DIR)/venv-sdist; \
	"$$python" -m venv $$venv \
	&& $$venv/bin/python -m pip install --quiet --require-hashes \
		-r requirements/wheel-test.txt -r requirements/release.txt \
	&& PATH=$$venv/bin:$$PATH CARGO_TARGET_DIR=$(abspath target/sdist) MATURIN_PEP517_ARGS=--locked \
		$$venv/bin/python -m pip install --isolated --quiet --no-index --no-build-isolation \
			"$$sdist[web]" \
	&& (cd $(WHEEL_TEST_DIR) && $$venv/bin/python -I wheel_smoke.py $(S2LITE_BIN)) \
	|| { echo "test-wheel: the sdist failed" >&2; exit 1; }

# actionlint, pinned with its dependencies in tools/actionlint (go.mod, go.sum).
lint-workflows:
	go -C tools/actionlint tool actionlint -no-color $(abspath .github/workflows/release.yml)

# Regenerate the hashed Python locks from requirements/*.in, and
# requirements/wheel-test.txt from the wheel's own dependencies with the `web`
# extra, for every Python test-wheel uses (3.10 gets the newest starlette that
# still supports it). uv keeps the versions already in a file, which in
# wheel-test.txt are dev.txt's where Python allows.
lock:
	$(PYTHON) -m venv /tmp/resumable-fast-lock
	/tmp/resumable-fast-lock/bin/pip install --quiet uv
	/tmp/resumable-fast-lock/bin/uv pip compile --python-version 3.11 --generate-hashes \
		--quiet requirements/dev.in -o requirements/dev.txt
	/tmp/resumable-fast-lock/bin/uv pip compile --python-version 3.11 --generate-hashes \
		--quiet requirements/bench.in -c requirements/dev.txt -o requirements/bench.txt
	/tmp/resumable-fast-lock/bin/uv pip compile --python-version 3.11 --generate-hashes \
		--quiet requirements/release.in -c requirements/dev.txt -o requirements/release.txt
	/tmp/resumable-fast-lock/bin/uv pip compile --universal --python-version 3.10 \
		--generate-hashes --quiet pyproject.toml --extra web -o requirements/wheel-test.txt

clean:
	rm -rf $(VENV) target $(INTEROP_DIR)/node_modules
