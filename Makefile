# qsfs — build, test, package and benchmark.
# `make demo` runs the embedded default end to end; `make test` runs every test.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

BIN      := bin/qsfs
GOFLAGS  := -trimpath
LDFLAGS  := -s -w
GO_TEST_TIMEOUT ?= 20m

DOCKER   ?= /usr/bin/docker
PLUGIN   ?= qsfs
PLUGIN_DIR := plugin-build

.PHONY: all build deps test unit e2e bench lint clean demo plugin plugin-docker plugin-create plugin-enable install

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

# The embedded default end to end: local backends, a private dockerd, the
# managed plugin, a volume, containers that write and read it.
demo: deps build
	scripts/demo.sh

# The managed plugin directory: $(PLUGIN_DIR)/config.json + rootfs/ (the
# static binary, iptables with its extensions, ip, fusermount3).
plugin: build
	scripts/build-rootfs.sh $(BIN) $(PLUGIN_DIR)

# The same rootfs through the Dockerfile (FROM scratch, offline).
plugin-docker: plugin
	$(DOCKER) build -q -t qsfs-rootfs:build -f Dockerfile $(PLUGIN_DIR)
	cid=$$($(DOCKER) create qsfs-rootfs:build) && rm -rf $(PLUGIN_DIR)/rootfs && mkdir $(PLUGIN_DIR)/rootfs && \
	  $(DOCKER) export $$cid | tar -x -C $(PLUGIN_DIR)/rootfs && $(DOCKER) rm $$cid >/dev/null

# `docker plugin create` on the host's dockerd (name $(PLUGIN)); the state
# and secrets directories and /run/netns must exist on the host.
plugin-create: plugin
	mkdir -p /var/lib/qsfs /etc/qsfs/secrets /run/netns
	chmod 700 /var/lib/qsfs /etc/qsfs/secrets
	-$(DOCKER) plugin disable -f $(PLUGIN) >/dev/null 2>&1
	-$(DOCKER) plugin rm -f $(PLUGIN) >/dev/null 2>&1
	$(DOCKER) plugin create $(PLUGIN) $(PLUGIN_DIR)

plugin-enable:
	$(DOCKER) plugin enable $(PLUGIN)

install: plugin-create plugin-enable

clean:
	rm -rf bin rootfs $(PLUGIN_DIR)
