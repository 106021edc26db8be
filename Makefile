# slurmlab: the two commands are `make demo` and `make test`. Everything else is a step
# of those. Cached builds live in $(SLURMLAB_CACHE); a running environment in
# $(SLURMLAB_STATE). See README.md.
SHELL := /bin/bash
SLURMLAB_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/slurmlab
SLURMLAB_STATE ?= /tmp/slurmlab
# cargo's build cache outside the clone, so a fresh clone (CI) builds incrementally.
CARGO_TARGET_DIR ?= $(SLURMLAB_CACHE)/target
# Integration tests start real Jupyter servers and SLURM jobs: keep it modest on 2 cores.
TEST_THREADS ?= 4
# The Kubernetes release the tests run against (built from its Go modules, cached per
# version). KUBE_OLDEST is the oldest minor we claim to support: `make test-oldest`.
KUBE_VERSION ?= 1.36.3
KUBE_OLDEST ?= 1.33.13
export SLURMLAB_CACHE SLURMLAB_STATE CARGO_TARGET_DIR KUBE_VERSION

.PHONY: all build image test test-oldest test-unit test-integration bench lint crds docs deploy release up down demo clean-cache

all: build

build:
	cargo build --locked

## up: bring up the local environment (control plane, two multi-host SLURM sites, Jupyter).
up:
	hack/up.sh

## image: build the slurmlab image (release build, OCI layout) and push it to the local
## registry of the running environment (hack/image.sh).
image:
	hack/image.sh

## down: stop everything the environment started.
down:
	hack/down.sh

## test: set everything up, run every test, and stop what was started, pass or fail.
test:
	@set -o pipefail; status=0; \
	SLURMLAB_FRESH=1 hack/up.sh || status=$$?; \
	if [ $$status = 0 ]; then hack/image.sh >/dev/null || status=$$?; fi; \
	if [ $$status = 0 ]; then $(MAKE) --no-print-directory lint test-unit test-integration || status=$$?; fi; \
	hack/down.sh || true; \
	exit $$status

## test-oldest: the whole suite against the oldest Kubernetes minor we support.
test-oldest:
	$(MAKE) --no-print-directory test KUBE_VERSION=$(KUBE_OLDEST)

## bench: set everything up, run the benchmarks (figures, not pass/fail), stop again.
bench:
	@status=0; hack/up.sh || status=$$?; \
	if [ $$status = 0 ]; then cargo bench --locked --bench slurm --bench controller --bench session --bench gateway --bench site || status=$$?; fi; \
	hack/down.sh || true; \
	exit $$status

test-unit:
	cargo test --locked --lib --bins

# Two runs: everything side by side, then the site faults (a killed compute host, a cut
# link, restarted daemons) alone, one at a time, since they take the site from everyone.
test-integration:
	@status=0; \
	cargo test --locked --no-fail-fast --test '*' -- --test-threads $(TEST_THREADS) --skip fault_ || status=$$?; \
	cargo test --locked --no-fail-fast --test site_faults -- --test-threads 1 || status=$$?; \
	exit $$status

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

## crds: regenerate crds/ (and the chart's copy) from the Rust types.
crds:
	cargo run --locked --quiet -- crds --output-dir crds
	cargo run --locked --quiet -- crds --output-dir charts/slurmlab/crds
	rm -f charts/slurmlab/crds/kustomization.yaml

## release: the binary the container image ships (same command as the Containerfile).
release:
	cargo build --release --locked --bin slurmlab

## docs: regenerate docs/reference (CRD fields, MCP tools) from the code.
docs:
	mkdir -p docs/reference
	cargo run --locked --quiet -- docs --output-dir docs/reference

## deploy: re-render deploy/base/slurmlab.yaml from the Helm chart.
deploy:
	"$$(hack/host-tools.sh)/python" hack/chart.py deploy

## demo: bring the environment up, install the CRDs and the examples, show them.
demo:
	hack/demo.sh

## clean-cache: forget every cached build (the next run rebuilds from nothing).
clean-cache: down
	rm -rf $(SLURMLAB_CACHE)
