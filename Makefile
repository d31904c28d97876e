# billingd / billctl: recurring billing for the IOTPay card gateway.
# `make` builds, `make test` runs every test against a throwaway PostgreSQL,
# `make demo` runs a simulated year, `make bench*` prints performance figures.
#
# pkg-config is asked lazily (first use, then remembered), and every target
# that installs packages first re-enters make afterwards: on a fresh machine
# nothing is evaluated before `make deps` has installed it.

CC       ?= cc
PKGS     := libcurl libcjson openssl libpq yaml-0.1 libmicrohttpd libsystemd
lazy      = $(eval $1 := $(shell pkg-config $2))$($1)
PKG_CFLAGS = $(call lazy,PKG_CFLAGS,--cflags $(PKGS))
PKG_LIBS   = $(call lazy,PKG_LIBS,--libs $(PKGS))
TEST_CFLAGS = $(call lazy,TEST_CFLAGS,--cflags cmocka)
TEST_LIBS   = $(call lazy,TEST_LIBS,--libs cmocka)
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -MMD -MP -Idaemon $(PKG_CFLAGS)
LDLIBS    = $(PKG_LIBS) -lpthread -lm
B        := build

ifeq ($(SANITIZE),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=address,undefined
B        := build-san
endif

LIB_SRC  := $(filter-out daemon/billingd.c,$(wildcard daemon/*.c))
LIB_OBJ  := $(patsubst daemon/%.c,$(B)/lib/%.o,$(LIB_SRC)) $(B)/lib/migrations_gen.o
CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(patsubst cli/%.c,$(B)/cli/%.o,$(CLI_SRC))
SUP_SRC  := $(wildcard tests/support*.c)
SUP_OBJ  := $(patsubst tests/%.c,$(B)/tests/%.o,$(SUP_SRC))
UNIT     := $(patsubst tests/unit/%.c,$(B)/tests/unit/%,$(wildcard tests/unit/test_*.c))
IT       := $(patsubst tests/it/%.c,$(B)/tests/it/%,$(wildcard tests/it/test_*.c))
BENCH    := $(patsubst tests/bench/%.c,$(B)/tests/bench/%,$(wildcard tests/bench/*.c))
MIGR     := $(sort $(wildcard migrations/*.sql))

# Objects are kept (and their .d files read) so that a rebuild is incremental.
.SECONDARY:
.PHONY: all tests-build deps test demo bench bench-client bench-due bench-events check-format format cppcheck clean
.PHONY: install check-dist check-install-steps

all: $(B)/billingd $(B)/billctl

$(B)/lib/%.o: daemon/%.c
	@mkdir -p $(@D)
	@echo '  CC      $<'
	@$(CC) $(CFLAGS) -c -o $@ $<

# The migrations are compiled into the binaries so that `billctl migrate`
# and billingd's schema check never depend on the working directory.
$(B)/lib/migrations_gen.c: $(MIGR) tools/embed_migrations.sh
	@mkdir -p $(@D)
	sh tools/embed_migrations.sh $(MIGR) > $@

$(B)/lib/migrations_gen.o: $(B)/lib/migrations_gen.c
	@echo '  CC      $<'
	@$(CC) $(CFLAGS) -c -o $@ $<

$(B)/libbilling.a: $(LIB_OBJ)
	ar rcs $@ $^

$(B)/billingd: $(B)/lib/billingd.o $(B)/libbilling.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/cli/%.o: cli/%.c
	@mkdir -p $(@D)
	@echo '  CC      $<'
	@$(CC) $(CFLAGS) -Icli -c -o $@ $<

$(B)/billctl: $(CLI_OBJ) $(B)/libbilling.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Everything below is for tests only: cmocka's flags stay here.
$(B)/tests/%.o: tests/%.c
	@mkdir -p $(@D)
	@echo '  CC      $<'
	@$(CC) $(CFLAGS) $(TEST_CFLAGS) -Itests -c -o $@ $<

$(B)/fakegw: $(B)/tests/fakegw.o $(B)/libbilling.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/unit/%: $(B)/tests/unit/%.o $(SUP_OBJ) $(B)/libbilling.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TEST_LIBS)

$(B)/tests/it/%: $(B)/tests/it/%.o $(SUP_OBJ) $(B)/libbilling.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TEST_LIBS)

$(B)/tests/bench/%: $(B)/tests/bench/%.o $(SUP_OBJ) $(B)/libbilling.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

tests-build: all $(B)/fakegw $(UNIT) $(IT) $(BENCH)

deps:
	sh tests/deps.sh

# Each target that needs packages runs `make deps` and then a new make, which
# reads pkg-config only once the packages are there.
test: deps
	$(MAKE) -j2 tests-build
	B=$(B) sh tests/run.sh

# PostgreSQL failovers mid-run (primary, streaming standby, PgBouncer; a
# few minutes): tests/failover.sh.
.PHONY: test-failover
test-failover: deps
	$(MAKE) -j2 tests-build
	B=$(B) sh tests/failover.sh

demo: deps
	$(MAKE) -j2 all $(B)/fakegw
	B=$(B) sh tests/demo.sh

bench bench-client bench-due bench-events: deps
	$(MAKE) -j2 tests-build
	B=$(B) sh tests/bench.sh $(patsubst bench,daemon,$(patsubst bench-%,%,$@))

# ---- version, install and its checks ----
# The version is VERSION's, compiled in as BILLING_VERSION.
VERSION  := $(shell cat VERSION)
CFLAGS   += -DBILLING_VERSION='"$(VERSION)"'
$(LIB_OBJ) $(CLI_OBJ) $(B)/lib/billingd.o: VERSION

# `make install PREFIX=/usr DESTDIR=/tmp/root` lays out the binaries, man
# pages, plans, example configuration and systemd unit; `make check-dist`
# lints the man pages and verifies the unit as installed.
PREFIX   ?= /usr/local
DESTDIR  ?=
MANS     := billctl.1 billingd.8 billing.yaml.5
DIST     := $(B)/dist

$(DIST)/billctl.bash: $(B)/billctl
	@mkdir -p $(@D)
	$< completion bash > $@

install: all $(DIST)/billctl.bash
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 \
	  $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/billing/plans \
	  $(DESTDIR)$(PREFIX)/share/doc/billing $(DESTDIR)$(PREFIX)/lib/systemd/system \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 755 $(B)/billctl $(DESTDIR)$(PREFIX)/bin/billctl
	install -m 755 $(B)/billingd $(DESTDIR)$(PREFIX)/sbin/billingd
	install -m 644 man/billctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/billctl.1
	install -m 644 man/billing.yaml.5 $(DESTDIR)$(PREFIX)/share/man/man5/billing.yaml.5
	install -m 644 man/billingd.8 $(DESTDIR)$(PREFIX)/share/man/man8/billingd.8
	install -m 644 plans/*.yaml $(DESTDIR)$(PREFIX)/share/billing/plans/
	install -m 644 $(DIST)/billctl.bash \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions/billctl
	install -m 644 billing.yaml.example $(DESTDIR)$(PREFIX)/share/doc/billing/billing.yaml.example
	sed 's|@SBINDIR@|$(PREFIX)/sbin|g' dist/billingd.service.in \
	  > $(DESTDIR)$(PREFIX)/lib/systemd/system/billingd.service
	chmod 644 $(DESTDIR)$(PREFIX)/lib/systemd/system/billingd.service

# The unit is verified as installed into a scratch prefix, where the
# billingd of its ExecStart exists.
check-dist: all
	cd man && mandoc -T lint $(MANS) # in man/, where the cross-references are
	# a macro run into the line before it is text to mandoc, and not a lint
	! grep -nE '^[^.].*[.](Sh|Ss|Bl|El|It|Pp) ' $(addprefix man/,$(MANS))
	rm -rf $(DIST)/root
	$(MAKE) --no-print-directory install PREFIX=$(CURDIR)/$(DIST)/root >/dev/null
	systemd-analyze verify --man=no $(DIST)/root/lib/systemd/system/billingd.service
	rm -rf $(DIST)/root

# README's "Running it for real", line by line, in private namespaces (root).
check-install-steps:
	bash tests/install_steps.sh

# README's two commands, both orders, on a new Debian 12 root (as root; slow:
# a debootstrap and two full builds and test runs).
.PHONY: test-fresh-root
test-fresh-root:
	bash tests/fresh_root.sh

format:
	clang-format -i daemon/*.[ch] cli/*.[ch] tests/*.[ch] tests/*/*.c

check-format:
	clang-format --dry-run -Werror daemon/*.[ch] cli/*.[ch] tests/*.[ch] tests/*/*.c

cppcheck:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --suppress=missingIncludeSystem -Idaemon daemon cli tests

clean:
	rm -rf build build-san

# ---- fuzzing: libFuzzer targets of tests/fuzz/, built with clang under
# ASan/UBSan in build-fuzz/. `make fuzz` runs each for FUZZ_SECONDS from its
# committed seeds (tests/fuzz/corpus/<target>/); what it finds is kept in
# build-fuzz/corpus/<target>/, a crashing input in build-fuzz/<target>-crash-*.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FZ           := build-fuzz
FUZZ_TARGETS := config plans gateway callback sign
FUZZ_CFLAGS   = $(CFLAGS) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=all
FUZZ_LIB_OBJ := $(patsubst daemon/%.c,$(FZ)/lib/%.o,$(LIB_SRC)) $(FZ)/lib/migrations_gen.o

.PHONY: fuzz fuzz-build clean-fuzz

$(FZ)/lib/%.o: daemon/%.c
	@mkdir -p $(@D)
	@echo '  FUZZCC  $<'
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FZ)/lib/migrations_gen.c: $(MIGR) tools/embed_migrations.sh
	@mkdir -p $(@D)
	sh tools/embed_migrations.sh $(MIGR) > $@

$(FZ)/lib/migrations_gen.o: $(FZ)/lib/migrations_gen.c
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FZ)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_support.c tests/fuzz/fuzz.h $(FUZZ_LIB_OBJ)
	@echo '  FUZZLD  $@'
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Itests/fuzz -o $@ \
	  $(filter %.c %.o,$^) $(LDLIBS)

fuzz-build: $(patsubst %,$(FZ)/fuzz_%,$(FUZZ_TARGETS))

fuzz: deps
	$(MAKE) -j2 fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FZ)/corpus/$$t; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  $(FZ)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix=$(FZ)/$$t- \
	    $(FZ)/corpus/$$t tests/fuzz/corpus/$$t 2>$(FZ)/$$t.log || \
	    { tail -n 60 $(FZ)/$$t.log; exit 1; }; \
	  grep -E '^stat::number_of_executed_units' $(FZ)/$$t.log; \
	done

clean-fuzz:
	rm -rf $(FZ)

clean: clean-fuzz

-include $(shell find $(FZ) -name '*.d' 2>/dev/null)

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# Reconcile throughput (issue 14): 100,000 orders checked against the fake
# gateway at 20 ms, the rate printed beside max_in_flight / latency.
.PHONY: bench-reconcile
bench-reconcile: deps
	$(MAKE) -j2 tests-build
	B=$(B) sh tests/bench.sh reconcile
