# Azaion Loader. `make run` runs the service in dev mode, `make test` runs every test (scripts/test.sh).
SHELL   := /bin/bash
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
TOOLS   := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/azaion-tools
STATICCHECK_VERSION := v0.7.0

.PHONY: run test bench build lint clean

## run: the loader in dev mode on this machine
run:
	$(GO) run ./cmd/azaion-loader serve --dev

## test: every check and test, with real dockerd and MinIO (installs what is missing)
test:
	bash scripts/test.sh

## bench: every benchmark (bench/*/) with its baseline, written to bench/RESULTS.md (scripts/bench.sh)
bench:
	bash scripts/bench.sh

## build: static binaries bin/azaion-loader-linux-{amd64,arm64}
build:
	@mkdir -p bin
	@set -e; for arch in amd64 arm64; do \
		echo "bin/azaion-loader-linux-$$arch"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" \
			-o bin/azaion-loader-linux-$$arch ./cmd/azaion-loader; \
	done

## lint: gofmt, go vet and staticcheck, without starting any part
lint:
	@files=$$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 | xargs -0 -r gofmt -l); \
		if [ -n "$$files" ]; then echo "not gofmt'ed:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...
	@test -x $(TOOLS)/staticcheck || GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(TOOLS)/staticcheck ./...

clean:
	rm -rf bin
