# Tools are pinned in tools/go.mod and built into .bin/ on first use.
SHELL := /bin/bash
MAKEFLAGS += --no-print-directory
BIN := $(CURDIR)/.bin
TOOLS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl
export PATH := $(BIN):$(PATH)

GO_TEST_FLAGS ?= -race -count=1 -timeout 15m

.PHONY: all build run test test-js fuzz generate check-generated lint tools grpcurl bench image clean console-screenshot

all: build

# The package is read from the tool block of tools/go.mod rather than with
# `go list tool`, which would download every tool's dependencies to build one.
$(BIN)/%: tools/go.mod tools/go.sum
	@mkdir -p $(BIN)
	cd tools && go build -o $(BIN)/$* $$(sed -n '/^tool (/,/^)/s/^[[:space:]]*\([^[:space:]]*\/$*\)$$/\1/p' go.mod)

tools: $(TOOLS)

## grpcurl: build the pinned grpcurl into .bin/.
grpcurl: $(BIN)/grpcurl

build:
	go build -o $(BIN)/membership-server ./cmd/membership-server
	go build -o $(BIN)/gateway ./cmd/gateway

## run: embedded etcd + membership-server + one gateway in the foreground; Ctrl-C stops all
## (cmd/devstack: the servers die with it, however it ends).
run: build
	go build -o $(BIN)/devstack ./cmd/devstack
	./scripts/run.sh

# The Node client's protoc-gen-es is its pinned devDependency, installed with
# the rest of its packages by npm ci (Node and npm from the distribution when
# missing, as for test-js).
PROTOC_GEN_ES := clients/node/node_modules/.bin/protoc-gen-es
GENERATED := gen/ clients/node/src/gen/

$(PROTOC_GEN_ES): clients/node/package.json clients/node/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || { apt-get update && apt-get install -y nodejs npm; }
	cd clients/node && npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

## generate: regenerate gen/ (Go) and clients/node/src/gen/ (TypeScript) from proto/.
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(PROTOC_GEN_ES)
	buf generate

## check-generated: fail when gen/ or clients/node/src/gen/ is stale or proto/ is not lint-clean and formatted.
check-generated: generate
	buf lint
	buf format -d --exit-code
	@git diff --exit-code -- $(GENERATED) || { echo "generated code is stale: run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- $(GENERATED))" || { git status --porcelain -- $(GENERATED); echo "generated code has untracked files: commit them" >&2; exit 1; }

lint: $(BIN)/buf
	buf lint
	buf format -d --exit-code
	go vet ./...
	cd deploy && go vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

## test: every test (the Kubernetes manifests' in deploy/, a module of its
## own, too), plus the generated-code and lint checks and a short run
## of each fuzz target.
test: check-generated lint test-js $(BIN)/grpcurl
	GRPCURL=$(BIN)/grpcurl go test $(GO_TEST_FLAGS) ./...
	cd deploy && go test -count=1 ./...
	$(MAKE) fuzz

## test-js: the browser library's and the console's unit tests under Node's test runner (Node and
## npm, which the Socket.IO client tests use to install their pinned packages,
## are installed from the distribution when missing; the browser end-to-end
## test installs Chromium the same way).
test-js:
	@command -v node >/dev/null && command -v npm >/dev/null || { apt-get update && apt-get install -y nodejs npm; }
	node --test web/ internal/console/

# An iteration count rather than a duration: a time limit lets the fuzz engine
# fail with "context deadline exceeded" when a worker is busy as time runs out.
FUZZ_TIME ?= 20000x
# Each input that widens coverage is minimized too, with up to FUZZ_TIME's
# count over the workers (10,000 calls) or 60 s unless bounded; an input that
# reaches a call which waits out its 500 ms deadline (FuzzRequestBytes'
# Deliver, WaitApplied) stalled the run at 0 executions/s for minutes. Twenty
# calls keep a found failure's input short enough to read.
FUZZ_MINIMIZE ?= 20x

## fuzz: run each fuzz target FUZZ_TIME (seed corpora run in every go test).
fuzz:
	go test -run '^$$' -fuzz '^FuzzRoomKey$$' -fuzztime $(FUZZ_TIME) -fuzzminimizetime $(FUZZ_MINIMIZE) ./internal/store
	go test -run '^$$' -fuzz '^FuzzSocketID$$' -fuzztime $(FUZZ_TIME) -fuzzminimizetime $(FUZZ_MINIMIZE) ./internal/store
	go test -run '^$$' -fuzz '^FuzzClientFrame$$' -fuzztime $(FUZZ_TIME) -fuzzminimizetime $(FUZZ_MINIMIZE) ./internal/gateway
	go test -run '^$$' -fuzz '^FuzzRequestBytes$$' -fuzztime $(FUZZ_TIME) -fuzzminimizetime $(FUZZ_MINIMIZE) ./internal/grpcedge
	go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZ_TIME) -fuzzminimizetime $(FUZZ_MINIMIZE) ./internal/socketio

## bench: every scenario of cmd/membership-bench against a fresh local stack;
## BENCH_ARGS passes flags (e.g. BENCH_ARGS="-scenario fanout -duration 10s").
## The peer scenario (BENCH_ARGS="-scenario peer") also needs etcd as its own
## process and Centrifugo, both built here on first use.
bench: build $(if $(findstring peer,$(BENCH_ARGS)),$(BIN)/etcd $(BIN)/centrifugo)
	go build -o $(BIN)/membership-bench ./cmd/membership-bench
	$(BIN)/membership-bench $(BENCH_ARGS)

# etcd's server, at the version go.mod pins, as its own binary: a main over
# go.etcd.io/etcd/server/v3/etcdmain (etcd's own main module cannot be built
# with go install: its go.mod has replace directives).
$(BIN)/etcd: go.mod go.sum internal/testutil/etcdmain/main.go
	@mkdir -p $(BIN)
	go build -o $@ ./internal/testutil/etcdmain

# Centrifugo, the version pinned in tools/centrifugo/go.mod (a module of its
# own, so that its dependencies stay out of ours), for the peer scenario.
$(BIN)/centrifugo: tools/centrifugo/go.mod tools/centrifugo/go.sum
	@mkdir -p $(BIN)
	cd tools/centrifugo && go build -o $@ \
		-ldflags "-X github.com/centrifugal/centrifugo/v6/internal/build.Version=$$(go list -m -f '{{.Version}}' github.com/centrifugal/centrifugo/v6 | sed 's/^v//')" \
		github.com/centrifugal/centrifugo/v6

## console-screenshot: refresh docs/console.png (the README's picture of the
## operator console) from a run of its browser test against a real stack;
## the test alone never writes into the tree.
console-screenshot:
	CONSOLE_SCREENSHOT=$(CURDIR)/docs/console.png go test -count=1 -run '^TestBrowserConsole$$' ./internal/e2e

## image: the container image with both binaries (needs a Docker engine).
image:
	docker build -t socketrooms:dev .

clean:
	rm -rf $(BIN)
