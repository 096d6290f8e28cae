# cyberdesk-operator — every entry point a developer, CI or a demo needs.
# `make test` and `make demo` build everything they need themselves.

SHELL := /bin/bash
comma := ,
CARGO ?= cargo
CACHE_DIR ?= $(or $(CYBERDESK_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/cyberdesk-operator)
export CYBERDESK_CONTROLPLANE_BIN ?= $(CACHE_DIR)/controlplane/bin

# kubectl for kustomize: the one `make controlplane` builds unless another is given.
KUBECTL ?= $(CYBERDESK_CONTROLPLANE_BIN)/kubectl
DIST ?= dist
IMAGE ?= ghcr.io/cyberdesk/cyberdesk-operator

.PHONY: help build release release-manifests image controlplane cluster tools test test-unit demo demo-pool fmt lint docs crd certs bench soak fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

build: ## build the operator and the test tools (debug)
	$(CARGO) build --workspace --all-targets --locked

release: ## build the release binary
	$(CARGO) build --release --locked -p cyberdesk-operator

release-manifests: $(if $(filter $(CYBERDESK_CONTROLPLANE_BIN)/kubectl,$(KUBECTL)),controlplane) ## render DIST/cyberdesk-operator-VERSION.yaml (VERSION=x.y.z [DIGEST=sha256:...])
	@[[ "$(VERSION)" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$$ ]] || { echo "VERSION=x.y.z is required (got '$(VERSION)')" >&2; exit 2; }
	@[[ -z "$(DIGEST)" || "$(DIGEST)" =~ ^sha256:[0-9a-f]{64}$$ ]] || { echo "DIGEST must be sha256:<64 hex> (got '$(DIGEST)')" >&2; exit 2; }
	@set -euo pipefail; mkdir -p "$(DIST)"; work=$$(mktemp -d -p "$(CURDIR)" .release.XXXXXX); trap 'rm -rf "$$work"' EXIT; \
	{ echo "apiVersion: kustomize.config.k8s.io/v1beta1"; echo "kind: Kustomization"; \
	  echo "resources: [\"../manifests/base\"]"; \
	  echo "images: [{name: \"ghcr.io/cyberdesk/cyberdesk-operator\", newName: \"$(IMAGE)\", newTag: \"$(VERSION)\"$(if $(DIGEST),$(comma) digest: \"$(DIGEST)\")}]"; } > "$$work/kustomization.yaml"; \
	{ echo "# cyberdesk-operator $(VERSION): kubectl apply --server-side -f cyberdesk-operator-$(VERSION).yaml"; \
	  "$(KUBECTL)" kustomize "$$work"; } > "$(DIST)/cyberdesk-operator-$(VERSION).yaml.tmp"; \
	mv "$(DIST)/cyberdesk-operator-$(VERSION).yaml.tmp" "$(DIST)/cyberdesk-operator-$(VERSION).yaml"; \
	echo "$(DIST)/cyberdesk-operator-$(VERSION).yaml"

controlplane: ## build kube-apiserver, etcd and kubectl from Go modules (cached)
	./integration/controlplane/build.sh

cluster: controlplane ## run a local kube-apiserver + etcd until Ctrl-C
	$(CARGO) run --locked -q -p cyberdesk-integration --bin cyberdesk-cluster

# Debian packages the tests and `make image` need: promtool (alert tests), podman and runc
# (the image and its tests), musl-gcc (ring for the static musl binary).
TOOLS := promtool:prometheus podman:podman runc:runc musl-gcc:musl-tools

tools: ## promtool, podman, runc and musl-gcc from Debian (installed when run as root)
	@missing=$$(for t in $(TOOLS); do command -v $${t%%:*} >/dev/null || echo $${t#*:}; done); \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing: install Debian's" $$missing "(apt-get install" $$missing")" >&2; exit 1; fi; }

# The operator's image (image/build.sh; image/Containerfile is its one final stage) and the
# podman that builds it and runs the image tests.
PODMAN ?= podman --runtime runc --cgroup-manager=cgroupfs
export CYBERDESK_PODMAN := $(PODMAN)
export CYBERDESK_IMAGE ?= cyberdesk-operator:$(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n1)

image: tools ## the image cyberdesk-operator:VERSION: static musl binary (cargo auditable) on scratch, podman, nothing pulled
	CARGO="$(CARGO)" PODMAN="$(PODMAN)" IMAGE="$(CYBERDESK_IMAGE)" $(BEAT) "building the image" ./image/build.sh local

E2E_JOBS ?= 2

test: controlplane tools image ## unit, handler and end-to-end tests (the image's too) against the real control plane
	@$(BEAT) "building the unit tests" $(CARGO) test --workspace --locked --no-run --lib --bins
	$(CARGO) test --workspace --locked --no-fail-fast --lib --bins
	$(CARGO) test --workspace --locked --doc
	E2E_JOBS=$(E2E_JOBS) CARGO=$(CARGO) ./integration/run-e2e.sh

test-unit: ## only the tests that need no control plane
	$(CARGO) test --locked -p cyberdesk-operator

# Cargo's own progress, and a line every 25 s while one large crate compiles (see
# integration/heartbeat.sh): a first build must never look like a hang.
BEAT := ./integration/heartbeat.sh

demo: controlplane ## local control plane + operator + a sample Cyberdesk, until Ctrl-C
	@$(BEAT) "building the operator and the demo" $(CARGO) build --locked -p cyberdesk-operator --bin cyberdesk-operator -p cyberdesk-integration --bin cyberdesk-demo
	$(or $(CARGO_TARGET_DIR),target)/debug/cyberdesk-demo

demo-pool: controlplane ## as demo, but the desk claims a VM from a warm pool booted first
	@$(BEAT) "building the operator and the demo" $(CARGO) build --locked -p cyberdesk-operator --bin cyberdesk-operator -p cyberdesk-integration --bin cyberdesk-demo
	$(or $(CARGO_TARGET_DIR),target)/debug/cyberdesk-demo --pool

docs: ## rewrite README's generated tables (flags, env, defaults; metric families; event reasons) from the code
	$(CARGO) run --locked -q -p cyberdesk-integration --bin cyberdesk-docs

crd: ## regenerate manifests/base/crd.yaml from the Rust types
	$(CARGO) run --locked -q -p cyberdesk-operator -- crd > manifests/base/crd.yaml

certs: ## write a local CA and serving certificate into webhook-certs/ (git-ignored)
	$(CARGO) run --locked -q -p cyberdesk-operator -- certs --out webhook-certs --san localhost,127.0.0.1

bench: controlplane ## benchmarks (figures, not pass/fail); see docs/benchmarks.md
	$(CARGO) build --release --locked -q -p cyberdesk-operator
	CYBERDESK_OPERATOR_BIN=$(or $(CARGO_TARGET_DIR),target)/release/cyberdesk-operator \
	  $(CARGO) run --release --locked -q -p cyberdesk-integration --bin cyberdesk-bench -- $(BENCH_ARGS)

# The chaos soak (docs/reliability.md): SOAK_MINUTES (60), SOAK_DESKS (1000), SOAK_SEED
# (random unless given; the report prints it). Release builds, as a cluster runs them.
soak: controlplane ## an hour of churn under seeded faults, invariants checked throughout (exit 1 on a violation)
	$(CARGO) build --release --locked -q -p cyberdesk-operator
	CYBERDESK_OPERATOR_BIN=$(or $(CARGO_TARGET_DIR),target)/release/cyberdesk-operator \
	  $(CARGO) run --release --locked -q -p cyberdesk-integration --bin cyberdesk-soak

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## rustfmt check, clippy with warnings denied, cargo-deny (licenses, bans, sources)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	command -v cargo-deny >/dev/null || $(CARGO) install cargo-deny@0.20.2 --locked
	$(CARGO) deny check licenses bans sources

clean: ## remove build output (keeps the control plane cache)
	$(CARGO) clean

FUZZ_SECONDS ?= 120
FUZZ_TARGETS := admission template policy
# New inputs the fuzzer finds go here; fuzz/corpus holds the committed seeds it starts from.
FUZZ_WORK ?= $(CACHE_DIR)/fuzz-corpus

fuzz: ## fuzz each target for FUZZ_SECONDS (nightly + cargo-fuzz, installed if missing)
	rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	set -o pipefail; cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_WORK)/$$t; \
	  cargo +nightly fuzz run $$t $(FUZZ_WORK)/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 \
	    | grep -E '^stat::number_of_executed_units|^Done|ERROR|panicked|SUMMARY' | sed "s/^/$$t: /" \
	    || exit 1; \
	done
