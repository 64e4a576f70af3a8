# qsfs — build, test, package and benchmark.
# `make demo` runs the embedded default end to end; `make test` runs every test.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

BIN      := bin/qsfs
GOFLAGS  := -trimpath
LDFLAGS  := -s -w
GO_TEST_TIMEOUT ?= 20m

.PHONY: all build deps test unit e2e bench lint clean

all: build

build: $(BIN)

$(BIN): $(shell find . -name '*.go' -not -path './rootfs/*') go.mod go.sum
	CGO_ENABLED=0 go build $(GOFLAGS) -ldflags '$(LDFLAGS)' -o $(BIN) .

deps:
	scripts/install-deps.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./...

# Unit and integration tests (real zdb servers, FUSE mounts, namespaces), then
# the bats end-to-end suite against a private dockerd.
test: deps build lint unit e2e

unit: build
	QSFS_BIN=$(abspath $(BIN)) go test -count=1 -timeout $(GO_TEST_TIMEOUT) ./...

e2e: build
	@if ls test/*.bats >/dev/null 2>&1; then QSFS_BIN=$(abspath $(BIN)) bats --tap test/; else echo "no bats tests yet"; fi

bench: deps build
	scripts/bench.sh

clean:
	rm -rf bin rootfs plugin-build
