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
# Seconds of fuzzing (of the log; checkpoints get half as long): a bounded run inside
# `make test`, a longer one in `make fuzz`.
FUZZ_SECONDS ?= 60
PORT ?= 8080
HOST ?= 127.0.0.1

.PHONY: help setup setup-rust setup-browsers setup-node demo serve pkg test lint test-native \
        test-wasm test-wasm-chrome test-wasm-firefox test-e2e test-fuzz fuzz bench clean

help:
	@echo "make demo   set up, build the package and serve the demo on http://$(HOST):$(PORT)/"
	@echo "make test   set up, then run every test (lint, native core, OPFS in Chromium and Firefox, end-to-end)"
	@echo "make pkg    build the npm package into pkg/"
	@echo "make bench  measure walnut against raw OPFS, IndexedDB and SQLite (docs/BENCHMARKS.md)"
	@echo "make fuzz   fuzz recovery for 30 minutes (and checkpoint bodies for 15)"

setup: setup-rust setup-browsers setup-node

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

# The npm package: wasm-pack output + the JS wrapper + pkg.json merged into pkg/package.json.
pkg: setup-rust setup-node
	wasm-pack build --release --target web --out-dir pkg --out-name walnut_core
	cp www/walnut.js www/worker.js www/walnut.d.ts pkg/
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

test-wasm-chrome: setup-rust setup-browsers
	wasm-pack test --headless --chrome --chromedriver "$(CHROMEDRIVER)"

test-wasm-firefox: setup-rust setup-browsers
	wasm-pack test --headless --firefox --geckodriver "$(GECKODRIVER)"

test-wasm: test-wasm-chrome test-wasm-firefox

test-e2e: pkg setup-browsers
	node --test --test-concurrency=1 tests/e2e/*.test.mjs

# cargo-fuzz needs a nightly toolchain; machines without one skip it and say so.
test-fuzz:
	@if ! rustup toolchain list | grep -q '^nightly'; then \
	  echo "test-fuzz: skipped (no nightly toolchain on this machine)"; \
	else \
	  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version "$(CARGO_FUZZ_VERSION)"; \
	  mkdir -p fuzz/corpus/open_log fuzz/corpus/open_checkpoint; \
	  cargo +nightly fuzz run open_log fuzz/corpus/open_log tests/fixtures -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 && \
	  cargo +nightly fuzz run open_checkpoint fuzz/corpus/open_checkpoint -- \
	    -max_total_time=$$(( $(FUZZ_SECONDS) / 2 )) -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1; \
	fi

fuzz:
	$(MAKE) test-fuzz FUZZ_SECONDS=1800

# Benchmarks: the core natively beside raw positioned writes (criterion), the log lifecycle
# (open time by keys and by history, space after overwrites), then walnut against raw OPFS,
# IndexedDB and SQLite in one headless Chromium (docs/BENCHMARKS.md, bench/results.json).
bench: setup pkg
	cargo bench --bench core -- --warm-up-time 1 --measurement-time 3
	cargo bench --bench lifecycle
	node bench/run.mjs

test: setup lint test-native test-fuzz test-wasm test-e2e

clean:
	rm -rf pkg target node_modules
