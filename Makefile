# fabricd's build, test, demo and install targets. Run as root for demo,
# test and install: the lab uses network namespaces and FRR.

PREFIX  ?= /usr/local
DESTDIR ?=
SBINDIR ?= $(PREFIX)/sbin
BINDIR  ?= $(PREFIX)/bin
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/fabricd
COMPDIR ?= $(PREFIX)/share/bash-completion/completions
MANDIR  ?= $(PREFIX)/share/man

GO      ?= go
GOFLAGS ?=
export CGO_ENABLED = 0

# Debian packages the lab and the tests need: FRR as the ToR, BIRD 2 as the
# other ToR of the interop matrix, iproute2 and ping for the lab, curl for the
# metrics endpoint, nftables to make a ToR drop traffic (BFD test) or its RAs
# (interop matrix), ignition and yamllint to check the deployment examples;
# lintian, rpm and man-db to check the packages, systemd to run the .deb
# under it, podman and runc to run the image (Debian 12's crun cannot run on
# hosts with both cgroup versions mounted).
DEB_PACKAGES = frr bird2 iproute2 iputils-ping curl util-linux procps nftables ignition yamllint \
	git lintian rpm man-db systemd podman runc

.PHONY: all build deps demo test unit e2e fuzz deploy-check bench scale chaos chaos-short proto install uninstall clean \
	release-bin deb rpm image package-check

all: build

build:
	$(GO) build $(GOFLAGS) -trimpath -o bin/ ./cmd/fabricd ./cmd/fabricctl

# Installs missing Debian packages (needs root and apt).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v $(GO) >/dev/null || { echo "Go is needed (https://go.dev/dl/); this machine has none on PATH"; exit 1; }

# The seed's topology in namespaces: FRR as the ToR, fabricd on c1..c3.
demo: deps build
	$(GO) run ./testenv/cmd/fabricd-lab demo --fabricd $(CURDIR)/bin/fabricd

# Everything CI runs: vet, unit tests with the race detector, the
# deployment examples, the packages and the image, the end-to-end tests
# against FRR (including the .deb under systemd and the image under
# podman), and a short fuzzing pass over every parser.
test: deps unit deploy-check package-check e2e chaos-short fuzz

unit:
	$(GO) vet ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 $$($(GO) list ./... | grep -v /testenv)

# The end-to-end tests build fabricd and fabricctl with the race detector
# (E2E_RACE=1, the default; about 11 minutes): a data race between
# GoBGP's callbacks, the control loop, the API and the FIB writer fails the
# run. Known upstream GoBGP races (testenv/racereport.go) are printed but do
# not fail it. E2E_RACE= runs the static binaries as shipped.
# testenv/dist installs the .deb of bin/release into a systemd in private
# namespaces and runs the image under podman (about a minute).
E2E_RACE ?= 1
e2e: release-bin
	FABRICD_E2E_RACE=$(E2E_RACE) FABRICD_RELEASE_BIN=$(CURDIR)/bin/release CGO_ENABLED=1 \
		$(GO) test -count=1 -timeout 25m ./testenv/...

# Each fuzz target runs FUZZTIME (inputs, or a duration such as 30s): the
# config loader, the FRR config translator, every hand-written parser
# (netlink replies, ND packets) and the uplink state machine (random event
# sequences, invariants checked after each step; and the session mailbox's
# coalescing against direct delivery). A count rather than a duration: on a
# loaded machine a timed run can fail with "context deadline exceeded"
# while stopping its workers.
FUZZTIME ?= 300000x
FUZZ_TARGETS = ./config:FuzzParse ./frrconf:FuzzTranslate ./fib:FuzzParseRoute ./fib:FuzzParseNexthop ./unnumbered:FuzzParseND \
	./uplink:FuzzMachine ./uplink:FuzzMailbox
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) $${t%%:*}; \
	done

# The deployment examples: Ignition validates, YAML lints (their content is
# checked by go test ./deploy).
deploy-check:
	ignition-validate deploy/flatcar/fabricd.ign
	yamllint -c deploy/.yamllint deploy/

# Compares fabricd with FRR as the server's routing daemon in namespace labs (root,
# FRR; about 6 minutes): FIB completion, bring-up, memory, the kernel floor, uplink
# carrier loss and return. BENCHFLAGS="--runs 1 --sizes 10000" for a quick look;
# results and method: docs/performance.md.
BENCHFLAGS ?=
bench: deps build
	$(GO) run ./testenv/cmd/fabricd-bench --fabricd $(CURDIR)/bin/fabricd $(BENCHFLAGS)

# The fabric-scale benchmark of issue 13 (root, FRR): two FRR ToRs and N
# dual-homed servers, fabricd on every server, then FRR on every server, each in
# a fresh lab: bring-up, idle memory, idle CPU and wakeups, failover on a killed
# and a frozen ToR, recovery after the ToR returns and after all its ports were
# down, with a ping flood's losses. About 10 minutes with the default sizes
# (16 and 48). SCALEFLAGS="--sizes 16 --roles fabricd" for a quick look;
# "--dir /tmp/scale" keeps every lab's configs and logs. Results and method:
# docs/performance.md.
SCALEFLAGS ?=
SCALE_OUT  ?= scale-report.md
scale: deps build
	$(GO) run ./testenv/cmd/fabricd-scale --fabricd $(CURDIR)/bin/fabricd --out $(SCALE_OUT) $(SCALEFLAGS)

# Release artefacts, from stripped static binaries in bin/release, by
# packaging/cmd/fabricd-dist (its own Go module: nfpm and
# go-containerregistry stay out of fabricd's dependencies). The version
# comes from git describe (v-tags) or the commit, every timestamp from the
# commit (SOURCE_DATE_EPOCH overrides): the same commit gives the same
# bytes. VERSION=1.2.3 overrides.
VERSION ?=
DIST = $(GO) -C packaging run ./cmd/fabricd-dist $(if $(VERSION),--version '$(VERSION)')

release-bin:
	$(GO) build $(GOFLAGS) -trimpath -ldflags='-s -w' -o bin/release/ ./cmd/fabricd ./cmd/fabricctl

# bin/fabricd_VERSION_ARCH.deb
deb: release-bin
	$(DIST) deb

# bin/fabricd-VERSION-1.ARCH.rpm
rpm: release-bin
	$(DIST) rpm

# bin/fabricd-image.tar: an OCI image archive (static binaries, empty base),
# built without a container daemon; prints its digest. Load it with
# `podman load -i`, push it with `skopeo copy oci-archive:bin/fabricd-image.tar docker://...`.
image: release-bin
	$(DIST) image

# The artefacts' checks: contents, conffiles, maintainer scripts, man
# pages, lintian, the image's layers, entrypoint and user, the DaemonSet
# against the image, and that two builds give the same bytes.
package-check: deb rpm image
	$(GO) -C packaging vet ./...
	FABRICD_RELEASE_BIN=$(CURDIR)/bin/release $(GO) -C packaging test -count=1 ./...

# The chaos soak of issue 11 (root, FRR): a dual-ToR lab with 4 servers, an ICMP
# flood between every pair of loopbacks and of pods, and seeded faults (link
# flaps and bursts, ToR ports down, ToR FRR killed, frozen, without RAs,
# server daemon killed or restarted, gateway entry deleted), one ToR at a
# time; the same schedule for fabricd and then FRR on the servers, each in a
# fresh lab. Prints one table per fault class and role and writes the full
# report to CHAOS_OUT; fails if fabricd loses packets beyond the rule or
# leaks (FRR is the baseline, reported only). About 25 minutes by default.
# CHAOSFLAGS="--dir /tmp/chaos" keeps every lab's configs and logs.
CHAOS_SEED     ?= 1
CHAOS_DURATION ?= 10m
CHAOS_ROLES    ?= fabricd,frr
CHAOS_OUT      ?= chaos-report.md
CHAOSFLAGS     ?=
chaos: deps build
	$(GO) run ./testenv/cmd/fabricd-chaos --fabricd $(CURDIR)/bin/fabricd --seed $(CHAOS_SEED) \
		--duration $(CHAOS_DURATION) --roles $(CHAOS_ROLES) --out $(CHAOS_OUT) $(CHAOSFLAGS)

# The short form make test runs: 2 minutes, seed 1, fabricd only (TestChaosSoak,
# which only runs with FABRICD_CHAOS=1, so that go test ./testenv/... does not
# run it beside the end-to-end tests).
chaos-short: deps
	FABRICD_CHAOS=1 $(GO) test -count=1 -timeout 20m -v -run '^TestChaosSoak$$' ./testenv/chaos

proto:
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I api \
		--go_out=api/fabricdpb --go_opt=paths=source_relative \
		--go-grpc_out=api/fabricdpb --go-grpc_opt=paths=source_relative \
		api/fabricd.proto

install: build
	install -D -m 0755 bin/fabricd $(DESTDIR)$(SBINDIR)/fabricd
	install -D -m 0755 bin/fabricctl $(DESTDIR)$(BINDIR)/fabricctl
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(COMPDIR)
	for u in fabricd.service fabricd-wait-online.service; do \
		sed 's|/usr/local/sbin/fabricd|$(SBINDIR)/fabricd|g; s|/usr/local/bin/fabricctl|$(BINDIR)/fabricctl|g' dist/$$u > $(DESTDIR)$(UNITDIR)/$$u && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	install -D -m 0644 dist/fabricd.toml $(DESTDIR)$(CONFDIR)/fabricd.toml.example
	[ -e $(DESTDIR)$(CONFDIR)/fabricd.toml ] || install -m 0644 dist/fabricd.toml $(DESTDIR)$(CONFDIR)/fabricd.toml
	bin/fabricctl completion bash > $(DESTDIR)$(COMPDIR)/fabricctl
	install -D -m 0644 dist/man/fabricd.8 $(DESTDIR)$(MANDIR)/man8/fabricd.8
	install -D -m 0644 dist/man/fabricctl.8 $(DESTDIR)$(MANDIR)/man8/fabricctl.8
	install -D -m 0644 dist/man/fabricd.toml.5 $(DESTDIR)$(MANDIR)/man5/fabricd.toml.5

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/fabricd $(DESTDIR)$(BINDIR)/fabricctl $(DESTDIR)$(UNITDIR)/fabricd.service \
		$(DESTDIR)$(UNITDIR)/fabricd-wait-online.service \
		$(DESTDIR)$(CONFDIR)/fabricd.toml.example $(DESTDIR)$(COMPDIR)/fabricctl \
		$(DESTDIR)$(MANDIR)/man8/fabricd.8 $(DESTDIR)$(MANDIR)/man8/fabricctl.8 $(DESTDIR)$(MANDIR)/man5/fabricd.toml.5

clean:
	rm -rf bin
