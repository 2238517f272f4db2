# tokend: `make demo` runs the daemon on examples/ against a local token endpoint; `make test` runs every test.
SWIFT ?= swift

.PHONY: all deps build lint format test fuzz demo bench bench-scale check-examples release install install-files deb clean

# `make install` (PREFIX, DESTDIR as usual): the static release binary, the units, sysusers/tmpfiles entries,
# the man page, the README and examples. /etc/tokend/tokend.toml is installed only when there is none.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/tokend
# The binary to install; `make install` builds it (release, Swift's runtime linked in statically).
BIN ?= .build-release/release/tokend
# Symbols stripped, about half of the static binary (BENCHMARKS.md, "Figures behind code comments");
# INSTALL_STRIP= keeps them.
INSTALL_STRIP ?= -s

all: build

deps:
	@scripts/install-deps

build: deps
	$(SWIFT) build

# `make lint` (run first by `make test`): the toolchain's swift-format in strict mode with .swift-format.
# Tests/.swift-format is the same file with the force-unwrap and force-try rules off (swift-format takes the nearest
# config whole, so it is a copy); the diff keeps the two from drifting apart. `make format` rewrites in place.
FORCE_RULES = -e NeverForceUnwrap -e NeverUseForceTry -e NeverUseImplicitlyUnwrappedOptionals

lint: SHELL := /bin/bash
lint:
	@diff <(grep -v $(FORCE_RULES) .swift-format) <(grep -v $(FORCE_RULES) Tests/.swift-format) >/dev/null \
		|| { echo "Tests/.swift-format must equal .swift-format but for the force rules"; exit 1; }
	$(SWIFT) format lint --strict --recursive Sources Tests Package.swift

format:
	$(SWIFT) format format --in-place --recursive Sources Tests Package.swift

test: deps lint
	$(SWIFT) build --build-tests
	$(SWIFT) test --disable-xctest --no-parallel

# `make fuzz`: libFuzzer (with AddressSanitizer) over the config parser and validator, the template renderer, the
# token response parser and the socket API router, FUZZ_TIME seconds each. Not part of `make test`. Seeds are in
# Fuzz/corpus/<target>/ (never written to); new inputs go to Fuzz/.build/corpus/<target>/, crashes to
# Fuzz/artifacts/<target>-crash-… (turn each into a regression test in Tests/TokendCoreTests).
FUZZ_TIME ?= 60
FUZZ_TARGETS ?= config template response router
FUZZ_BIN = Fuzz/.build/debug/tokend-fuzz

fuzz:
	$(SWIFT) build --package-path Fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld
	@mkdir -p Fuzz/artifacts
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p Fuzz/.build/corpus/$$target; \
		echo "fuzzing $$target for $(FUZZ_TIME) s"; \
		LSAN_OPTIONS=suppressions=Fuzz/lsan.supp TOKEND_FUZZ_TARGET=$$target $(FUZZ_BIN) -max_total_time=$(FUZZ_TIME) -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
			-artifact_prefix=Fuzz/artifacts/$$target- Fuzz/.build/corpus/$$target Fuzz/corpus/$$target || exit 1; \
	done

demo: deps
	$(SWIFT) build --product tokend
	$(SWIFT) build --product tokend-example-endpoint
	scripts/demo

# Benchmarks (not tests): serving against nginx, a shell's per-call cost, 1,000 and 10,000 instances against a
# Python peer; results into BENCHMARKS.md and bench/*.json. Knobs: see scripts/bench.
bench: deps
	scripts/bench

bench-scale: deps
	scripts/bench scale

check-examples: build
	CREDENTIALS_DIRECTORY=$(CURDIR)/examples/credentials .build/debug/tokend check --config-dir examples
	for dir in examples/recipes/*/; do \
		CREDENTIALS_DIRECTORY=$(CURDIR)/$${dir%/}/credentials .build/debug/tokend check --config-dir $$dir || exit 1; \
	done

release: deps
	scripts/release-build tokend

install: release install-files

install-files:
	install $(INSTALL_STRIP) -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/tokend
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed -e 's#/usr/local/bin/tokend#$(BINDIR)/tokend#g' -e 's#/usr/local/share/doc/tokend#$(DOCDIR)#g' \
		systemd/tokend.service >$(DESTDIR)$(UNITDIR)/tokend.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/tokend.service
	install -m 0644 systemd/tokend.socket $(DESTDIR)$(UNITDIR)/tokend.socket
	install -m 0644 systemd/tokend-credentials.socket $(DESTDIR)$(UNITDIR)/tokend-credentials.socket
	install -D -m 0644 systemd/tokend.sysusers $(DESTDIR)$(SYSUSERSDIR)/tokend.conf
	install -D -m 0644 systemd/tokend.tmpfiles $(DESTDIR)$(TMPFILESDIR)/tokend.conf
	install -D -m 0644 docs/tokend.8 $(DESTDIR)$(MANDIR)/man8/tokend.8
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -d -m 0755 $(DESTDIR)$(DOCDIR)/examples/connectors $(DESTDIR)$(DOCDIR)/examples/instances
	install -m 0644 examples/tokend.toml $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 examples/connectors/*.toml $(DESTDIR)$(DOCDIR)/examples/connectors/
	install -m 0644 examples/instances/*.toml $(DESTDIR)$(DOCDIR)/examples/instances/
	find examples/recipes -type f | sort | while read -r file; do \
		install -D -m 0644 "$$file" "$(DESTDIR)$(DOCDIR)/$$file" || exit 1; \
	done
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/tokend/connectors $(DESTDIR)$(SYSCONFDIR)/tokend/instances
	[ -e $(DESTDIR)$(SYSCONFDIR)/tokend/tokend.toml ] || \
		install -m 0644 systemd/tokend.toml $(DESTDIR)$(SYSCONFDIR)/tokend/tokend.toml

# `make deb`: tokend_<version>_<arch>.deb in DEBDIR (packaging/build-deb: `make install-files` into a staging tree
# with PREFIX=/usr, then dpkg-deb). The version is Tokend.version in Sources/tokend/Tokend.swift plus the Debian
# revision DEB_REVISION (0.1.0-1). Builds the release binary first, like `make install`, unless BIN names another
# (the tests pass BIN=.build/debug/tokend). Then `apt install ./.build/deb/tokend_…deb`.
DEBDIR ?= .build/deb
DEB_REVISION ?= 1
DEB_COMPRESS ?= -Zxz

deb: $(if $(filter .build-release/release/tokend,$(BIN)),release)
	BIN='$(BIN)' DEBDIR='$(DEBDIR)' DEB_REVISION='$(DEB_REVISION)' DEB_COMPRESS='$(DEB_COMPRESS)' packaging/build-deb

clean:
	rm -rf .build
