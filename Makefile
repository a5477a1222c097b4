# peerprep-init: see README.md. `make` builds the static musl binary;
# `make check` runs every test; `make demo` runs the main job on localhost.

VERSION   := 0.1.0
PREFIX    ?= /usr/local
DESTDIR   ?=
DEPS      ?= vendored
SECONDS   ?= 60
PYTHON    ?= /usr/bin/python3
# Deadline per unit-test binary (seconds); process tests have their own.
UNIT_TIMEOUT ?= 300

BUILD     := build
DEPDIR    := $(BUILD)/deps

WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wpointer-arith -Wformat=2 -Wno-unused-parameter
ifeq ($(CI),true)
WARN      += -Werror
endif
INIH_DEFS := -DINI_ALLOW_MULTILINE=0 -DINI_ALLOW_INLINE_COMMENTS=0 -DINI_STOP_ON_FIRST_ERROR=1 -DINI_MAX_LINE=4096 \
             -DINI_CALL_HANDLER_ON_NEW_SECTION=1 -DINI_HANDLER_LINENO=0
COMMON    := -std=c11 -D_GNU_SOURCE -DPI_VERSION='"$(VERSION)"' $(INIH_DEFS) -I. $(WARN)

SRC       := $(sort $(wildcard init/*.c envsubst/*.c health/*.c))
LIBSRC    := $(filter-out init/main.c,$(SRC))
HDR       := $(wildcard init/*.h envsubst/*.h health/*.h)

ifeq ($(DEPS),system)
CC        ?= cc
REL_CC    := $(CC)
REL_INC   :=
REL_LIBS  := -luv -linih
DEPSTAMP  :=
else
REL_CC    := musl-gcc
REL_INC   := -isystem $(DEPDIR)/musl/include
REL_LIBS  := $(DEPDIR)/musl/lib/libuv.a $(DEPDIR)/musl/lib/libinih.a
DEPSTAMP  := $(DEPDIR)/musl/lib/libuv.a
endif
REL_CFLAGS := $(COMMON) -Os -ffunction-sections -fdata-sections $(REL_INC)
REL_LDFLAGS := -static -s -Wl,--gc-sections

# The sanitizer build links gcc-built copies of the same pinned sources.
SAN       := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
ASAN_INC  := -isystem $(DEPDIR)/glibc/include
ASAN_LIBS := $(DEPDIR)/glibc/lib/libuv.a $(DEPDIR)/glibc/lib/libinih.a -lpthread -ldl
ASAN_CFLAGS := $(COMMON) -O1 -g $(SAN) $(ASAN_INC)

REL_OBJ   := $(SRC:%.c=$(BUILD)/rel/%.o)
ASAN_OBJ  := $(SRC:%.c=$(BUILD)/asan/%.o)
ASAN_LIBOBJ := $(LIBSRC:%.c=$(BUILD)/asan/%.o)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/unit/%)
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN  := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)


all: $(BUILD)/peerprep-init

deps:
	@sh mk/deps.sh $(abspath $(DEPDIR))

$(DEPDIR)/musl/lib/libuv.a $(DEPDIR)/glibc/lib/libuv.a:
	@sh mk/deps.sh $(abspath $(DEPDIR))

$(BUILD)/rel/%.o: %.c $(HDR) $(DEPSTAMP)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(REL_CC) $(REL_CFLAGS) -c $< -o $@

$(BUILD)/peerprep-init: $(REL_OBJ)
	@echo "  LD      $@"
	@$(REL_CC) $(REL_CFLAGS) $(REL_LDFLAGS) -o $@ $(REL_OBJ) $(REL_LIBS)
	@size=$$(stat -c %s $@); echo "built $@ ($$size bytes)"; \
	  if [ $$size -gt 307200 ]; then echo "error: $@ is over the 300 KiB budget" >&2; exit 1; fi

$(BUILD)/asan/%.o: %.c $(HDR) $(DEPDIR)/glibc/lib/libuv.a
	@mkdir -p $(dir $@)
	@echo "  CC-SAN  $<"
	@gcc $(ASAN_CFLAGS) -c $< -o $@

$(BUILD)/asan/peerprep-init: $(ASAN_OBJ)
	@echo "  LD-SAN  $@"
	@gcc $(ASAN_CFLAGS) -o $@ $(ASAN_OBJ) $(ASAN_LIBS)

$(BUILD)/unit/%: tests/unit/%.c tests/unit/tap.h $(ASAN_LIBOBJ)
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	@gcc $(ASAN_CFLAGS) -Itests/unit -o $@ $< $(ASAN_LIBOBJ) $(ASAN_LIBS)

# libFuzzer harnesses: clang, ASan+UBSan, linked with the library sources.
FUZZ_CFLAGS := $(COMMON) -O1 -g -fsanitize=fuzzer,address,undefined $(ASAN_INC)
$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/check.h $(LIBSRC) $(HDR) $(DEPDIR)/glibc/lib/libuv.a
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $@"
	@clang $(FUZZ_CFLAGS) -o $@ $< $(LIBSRC) $(ASAN_LIBS)

check-unit: deps $(UNIT_BIN)
	prove -f --exec 'timeout -k 5 $(UNIT_TIMEOUT)' $(UNIT_BIN)

check-it: deps $(BUILD)/peerprep-init
	PI_BINARY=$(abspath $(BUILD)/peerprep-init) $(PYTHON) -m pytest -q -p no:cacheprovider -p no:timeout tests/it

# Every sanitizer report goes to a file under build/san-logs; any file there
# fails the target, even when the test around it passed.
SANLOG    := $(abspath $(BUILD)/san-logs)
check-asan: deps $(BUILD)/asan/peerprep-init
	@rm -rf $(SANLOG) && mkdir -p $(SANLOG)
	ASAN_OPTIONS=log_path=$(SANLOG)/asan:detect_leaks=1 \
	UBSAN_OPTIONS=log_path=$(SANLOG)/ubsan:print_stacktrace=1:halt_on_error=1 \
	PI_BINARY=$(abspath $(BUILD)/asan/peerprep-init) $(PYTHON) -m pytest -q -p no:cacheprovider -p no:timeout tests/it
	@if [ -n "$$(ls $(SANLOG))" ]; then echo "sanitizer reports in $(SANLOG):" >&2; \
	  head -n 40 $(SANLOG)/* >&2; exit 1; fi; echo "no sanitizer reports"

# Each harness runs FUZZ_SECONDS over its corpus and seeds; a finding (or
# any non-zero exit) fails the target and leaves the input in build/fuzz/.
fuzz-smoke: deps $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do n=$$(basename $$f); mkdir -p $(BUILD)/corpus/$$n; \
	  seeds=tests/fuzz/seeds/$$n; [ -d $$seeds ] || seeds=; log=$(BUILD)/fuzz/$$n.log; \
	  if ! $$f -max_total_time=$${FUZZ_SECONDS:-10} -print_final_stats=1 \
	      -artifact_prefix=$(BUILD)/fuzz/$$n- $(BUILD)/corpus/$$n $$seeds >$$log 2>&1; then \
	    tail -n 60 $$log >&2; echo "$$n: FAILED (log: $$log)" >&2; exit 1; fi; \
	  echo "$$n: $$(grep -E 'stat::number_of_executed_units' $$log)"; done

fuzz: deps $(FUZZ_BIN)
	@$(MAKE) --no-print-directory fuzz-smoke FUZZ_SECONDS=$(SECONDS)

# The image (README, "Deploying"): built by docker or podman, whichever
# works, on local stand-in base images unless STANDINS=0 (mk/images.sh).
# FRONTEND=DIR is the Vite project to ship; without it, the placeholder.
IMAGE     ?= peerprep-frontend
TARGET    ?= production
FRONTEND  ?=
image:
	sh mk/images.sh build $(IMAGE) $(TARGET) $(FRONTEND)

# tests/image: both targets built and run by podman (as root).
check-image: deps
	$(PYTHON) -m pytest -q -p no:cacheprovider -p no:timeout tests/image

# The man page renders with man(1), and groff reports no warning (-ww).
MANPAGE   := doc/peerprep-init.8
check-man:
	@out=$$(LC_ALL=C.UTF-8 MANWIDTH=80 man -l $(MANPAGE) 2>&1 >/dev/null) && \
	  out="$$out$$(groff -man -ww -z -Tutf8 $(MANPAGE) 2>&1)" && [ -z "$$out" ] || \
	  { echo "$(MANPAGE): $${out:-man failed}" >&2; exit 1; }; \
	  echo "$(MANPAGE): renders without warnings"

# The general tests of tini's and dumb-init's own suites, against the real
# peers (the control) and against peerprep-init; tests/peers/expected.py
# names what is left out and the documented differences.
check-peers: deps $(BUILD)/peerprep-init
	@sh mk/peers.sh $(BUILD)/peerprep-init $(PYTHON)

check: deps all check-man check-unit fuzz-smoke check-it check-asan check-peers check-image

bench: deps all $(BUILD)/hload
	$(PYTHON) tests/bench/bench.py $(abspath $(BUILD)/peerprep-init)

# The bench's open-loop load generator, built for the host (it is a tool
# of the bench, not part of the image).
$(BUILD)/hload: tests/bench/hload.c
	@mkdir -p $(BUILD)
	cc -O2 $(WARN) -o $@ tests/bench/hload.c

demo: deps all
	$(PYTHON) tests/demo.py $(abspath $(BUILD)/peerprep-init)

install: $(BUILD)/peerprep-init install-man
	install -D -m 0755 $(BUILD)/peerprep-init $(DESTDIR)$(PREFIX)/bin/peerprep-init
	install -D -m 0644 deploy/peerprep-init.ini $(DESTDIR)/etc/peerprep-init.ini

install-man:
	install -D -m 0644 $(MANPAGE) $(DESTDIR)$(PREFIX)/share/man/man8/peerprep-init.8

format:
	clang-format -i $(SRC) $(HDR) $(UNIT_SRC) $(FUZZ_SRC)

clean:
	rm -rf $(BUILD)/rel $(BUILD)/asan $(BUILD)/unit $(BUILD)/fuzz $(BUILD)/peers $(BUILD)/peerprep-init
