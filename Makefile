# tokend: `make demo` runs the daemon on examples/ against a local token endpoint; `make test` runs every test.
SWIFT ?= swift

.PHONY: all deps build test demo bench-scale check-examples clean

all: build

deps:
	@scripts/install-deps

build: deps
	$(SWIFT) build

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --disable-xctest --no-parallel

demo: deps
	$(SWIFT) build --product tokend
	$(SWIFT) build --product tokend-example-endpoint
	scripts/demo

bench-scale: deps
	scripts/bench-scale

check-examples: build
	CREDENTIALS_DIRECTORY=$(CURDIR)/examples/credentials .build/debug/tokend check --config-dir examples

clean:
	rm -rf .build
