# qat: two commands on a fresh machine (as root): `make demo` and `make test`.
# Every target first installs the Debian packages it needs, once.

APT_PACKAGES := libopenblas-dev libhdf5-dev hdf5-tools zlib1g-dev pkg-config dataset-fashion-mnist \
                libonnx-dev libprotobuf-dev libonnx-testdata
# pipefail: a failing command in a pipe (swift test | tee) fails the target.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

SWIFT ?= swift
QAT := .build/release/qat
# Importing a target that is not a declared dependency is an error, not a warning (Package.swift).
STRICT := --explicit-target-dependency-import-check error

.PHONY: all deps build demo test bench behaviour-check layering fuzz fuzz-smoke clean

all: build

# Installs only what is missing; `apt-get update` runs first because a fresh machine's lists are empty.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build $(STRICT) -c release --product qat

demo: build
	./examples/demo.sh

# The suite is XCTest only; the empty Swift Testing run is switched off so the log ends on
# XCTest's summary.
test: deps
	$(SWIFT) build $(STRICT) --build-tests
	$(SWIFT) test --skip-build --disable-swift-testing 2>&1 | tee .build/test.log
	@summary=$$(grep -E "^\s*Executed [0-9]+ tests?, with [0-9]+ failures?" .build/test.log | tail -1); \
	total=$$(echo "$$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/'); \
	failed=$$(echo "$$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/'); \
	test -n "$$summary" || { echo "no XCTest summary found"; exit 1; }; \
	echo "$$((total - failed)) passed, $$failed failed"; \
	test "$$failed" = 0
	@# The bounded fuzz run (docs/FUZZING.md) against the release binary; `make fuzz` runs thousands.
	$(MAKE) --no-print-directory fuzz-smoke

bench: deps
	$(SWIFT) build -c release --product qat-bench
	@echo "== OPENBLAS_CORETYPE as set by the environment ($${OPENBLAS_CORETYPE:-unset}) =="
	.build/release/qat-bench
	@echo "== OPENBLAS_CORETYPE=Haswell (OpenBLAS's AVX2 kernels) =="
	OPENBLAS_CORETYPE=Haswell .build/release/qat-bench
	@echo "== OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (OpenBLAS picks its kernel from cpuid) =="
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .build/release/qat-bench

# Byte-for-byte comparison of short seeded runs with the snapshot taken before the redesign.
behaviour-check: build
	scripts/behaviour-check.sh $(QAT)

# Every backwards import between the floors must fail to build.
layering: deps
	scripts/check-layering.sh

# The release qat run on damaged configs, checkpoints, deploy files and IDX data (docs/FUZZING.md).
# Ends with "N passed, M failed"; fails if M > 0. Failing cases stay in .build/fuzz/failures.
fuzz: build
	python3 scripts/fuzz.py --cases 3000 --qat $(QAT)

# The bounded form (300 cases, under a minute on 2 cores).
fuzz-smoke: build
	python3 scripts/fuzz.py --cases 300 --qat $(QAT)

clean:
	rm -rf .build
