# billingd / billctl: recurring billing for the IOTPay card gateway.
# `make` builds, `make test` runs every test against a throwaway PostgreSQL,
# `make demo` runs a simulated year, `make bench*` prints performance figures.

CC       ?= cc
PKGS     := libcurl libcjson openssl libpq yaml-0.1 libmicrohttpd
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Idaemon $(shell pkg-config --cflags $(PKGS) cmocka)
LDLIBS   := $(shell pkg-config --libs $(PKGS)) -lpthread -lm
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

.PHONY: tests-build all deps test check-format format cppcheck demo bench bench-client bench-due clean

all: $(B)/billingd $(B)/billctl $(B)/fakegw

$(B)/lib/%.o: daemon/%.c $(wildcard daemon/*.h)
	@mkdir -p $(@D)
	@echo '  CC      $<'
	@$(CC) $(CFLAGS) -c -o $@ $<

# The migrations are compiled into the binaries so that `billctl migrate`
# and billingd's schema check never depend on the working directory.
$(B)/lib/migrations_gen.c: $(MIGR) tests/embed_migrations.sh
	@mkdir -p $(@D)
	sh tests/embed_migrations.sh $(MIGR) > $@

$(B)/lib/migrations_gen.o: $(B)/lib/migrations_gen.c
	@echo '  CC      $<'
	@$(CC) $(CFLAGS) -c -o $@ $<

$(B)/libbilling.a: $(LIB_OBJ)
	ar rcs $@ $^

$(B)/billingd: daemon/billingd.c $(B)/libbilling.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libbilling.a $(LDLIBS)

$(B)/cli/%.o: cli/%.c $(wildcard cli/*.h) $(wildcard daemon/*.h)
	@mkdir -p $(@D)
	@echo '  CC      $<'
	@$(CC) $(CFLAGS) -Icli -c -o $@ $<

$(B)/billctl: $(CLI_OBJ) $(B)/libbilling.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(B)/libbilling.a $(LDLIBS)

$(B)/fakegw: tests/fakegw.c $(B)/libbilling.a
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libbilling.a $(LDLIBS)

$(B)/tests/%.o: tests/%.c tests/support.h $(wildcard daemon/*.h)
	@mkdir -p $(@D)
	@echo '  CC      $<'
	@$(CC) $(CFLAGS) -Itests -c -o $@ $<

$(B)/tests/unit/%: tests/unit/%.c $(B)/libbilling.a $(SUP_OBJ)
	@mkdir -p $(@D)
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -Itests -o $@ $< $(SUP_OBJ) $(B)/libbilling.a $(LDLIBS) -lcmocka

$(B)/tests/it/%: tests/it/%.c $(B)/libbilling.a $(SUP_OBJ)
	@mkdir -p $(@D)
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -Itests -o $@ $< $(SUP_OBJ) $(B)/libbilling.a $(LDLIBS) -lcmocka

$(B)/tests/bench/%: tests/bench/%.c $(B)/libbilling.a $(SUP_OBJ)
	@mkdir -p $(@D)
	@echo '  LD      $@'
	@$(CC) $(CFLAGS) $(LDFLAGS) -Itests -o $@ $< $(SUP_OBJ) $(B)/libbilling.a $(LDLIBS)

tests-build: all $(UNIT) $(IT) $(BENCH)

deps:
	sh tests/deps.sh

# One summary line at the end: "N passed, N failed".
test: deps
	$(MAKE) -j2 tests-build
	B=$(B) sh tests/run.sh

demo: deps all
	B=$(B) sh tests/demo.sh

bench: deps tests-build
	B=$(B) sh tests/bench.sh daemon

bench-client: deps tests-build
	B=$(B) sh tests/bench.sh client

bench-due: deps tests-build
	B=$(B) sh tests/bench.sh due

format:
	clang-format -i daemon/*.[ch] cli/*.[ch] tests/*.[ch] tests/*/*.c

check-format:
	clang-format --dry-run -Werror daemon/*.[ch] cli/*.[ch] tests/*.[ch] tests/*/*.c

cppcheck:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --suppress=missingIncludeSystem -Idaemon daemon cli tests

clean:
	rm -rf build build-san
