# billingd / billctl: recurring billing for the IOTPay card gateway.
# `make` builds, `make test` runs every test against a throwaway PostgreSQL,
# `make demo` runs a simulated year, `make bench*` prints performance figures.
#
# pkg-config is asked lazily (first use, then remembered), and every target
# that installs packages first re-enters make afterwards: on a fresh machine
# nothing is evaluated before `make deps` has installed it.

CC       ?= cc
PKGS     := libcurl libcjson openssl libpq yaml-0.1 libmicrohttpd
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
.PHONY: all tests-build deps test demo bench bench-client bench-due test-fresh-root check-format format cppcheck clean

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

demo: deps
	$(MAKE) -j2 all $(B)/fakegw
	B=$(B) sh tests/demo.sh

bench bench-client bench-due: deps
	$(MAKE) -j2 tests-build
	B=$(B) sh tests/bench.sh $(patsubst bench,daemon,$(patsubst bench-%,%,$@))

# README's two commands, both orders, on a new Debian 12 root (as root; slow:
# a debootstrap and two full builds and test runs).
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

-include $(shell find $(B) -name '*.d' 2>/dev/null)
