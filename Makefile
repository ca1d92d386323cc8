# wxlogin — see README.md. `make run` and `make test` are the two commands that matter.

CC      ?= cc
PKGS    := libmicrohttpd libcurl jansson inih libcrypto sqlite3 hiredis libsystemd
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Werror
CFLAGS_BASE := -std=c17 -D_GNU_SOURCE -pthread -Isrc $(WARN) -MMD -MP
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
TEST_LIBS  = $(shell pkg-config --libs cmocka 2>/dev/null)

PY      := /usr/bin/python3
DEPS_STAMP := .deps-installed

SRC      := $(shell find src -name '*.c' | sort)
# The mock is its own program (wxlogin-mock): none of src/mock/ goes into wxlogin.
MOCK_SRC := $(filter src/mock/%,$(SRC))
LIB_SRC  := $(filter-out src/main.c $(MOCK_SRC),$(SRC))
MOCKLIB_SRC := $(filter-out src/mock/main.c,$(MOCK_SRC))
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))

# Two build flavours from the same sources: normal, and ASan+UBSan.
B        ?= build
ifeq ($(B),build-asan)
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
else ifeq ($(B),build-tsan)
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
else
OPT := -O2 -g
endif

# A third, for fuzzing: clang with libFuzzer's coverage (the drivers link libFuzzer itself).
ifeq ($(B),build-fuzz)
CC  := clang
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
       -fno-sanitize-recover=all
endif
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_BIN := $(patsubst fuzz/%.c,build-fuzz/fuzz/%,$(FUZZ_SRC))
FUZZ_SECONDS ?= 60

OBJ      := $(patsubst src/%.c,$(B)/obj/%.o,$(SRC))
LIB_OBJ  := $(patsubst src/%.c,$(B)/obj/%.o,$(LIB_SRC))
MOCKLIB_OBJ := $(patsubst src/%.c,$(B)/obj/%.o,$(MOCKLIB_SRC))
UNIT_BIN := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))

.PHONY: all deps build unit e2e test test-one asan run bench format format-check clean \
        fuzz fuzz-build fuzz-check tsan valgrind

all: build

deps: $(DEPS_STAMP)
$(DEPS_STAMP): scripts/install-deps.sh
	bash scripts/install-deps.sh
	@touch $@

build: $(B)/wxlogin $(B)/wxlogin-mock $(UNIT_BIN)

$(B)/obj/%.o: src/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

# The commit, for --version: rewritten only when it changes, so nothing relinks for nothing.
# Outside a git checkout (or without git) it is "unknown"; the build never fails for it.
GIT_COMMIT := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
.PHONY: FORCE
$(B)/commit.c: FORCE
	@mkdir -p $(B)
	@echo 'const char wxlogin_commit[] = "$(GIT_COMMIT)";' > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

$(B)/obj/commit.o: $(B)/commit.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -c $< -o $@

$(B)/libwxlogin.a: $(LIB_OBJ) $(B)/obj/commit.o
	@rm -f $@
	ar rcs $@ $^

$(B)/libwxlogin-mock.a: $(MOCKLIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/wxlogin: $(B)/obj/main.o $(B)/libwxlogin.a
	$(CC) $(OPT) -pthread -o $@ $^ $(PKG_LIBS) $(LDFLAGS)

$(B)/wxlogin-mock: $(B)/obj/mock/main.o $(B)/libwxlogin-mock.a $(B)/libwxlogin.a
	$(CC) $(OPT) -pthread -o $@ $^ $(PKG_LIBS) $(LDFLAGS)

$(B)/tests/%: tests/unit/%.c $(B)/libwxlogin-mock.a $(B)/libwxlogin.a | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) $(PKG_CFLAGS) -Wno-missing-prototypes $(CFLAGS) -o $@ $< \
	    $(B)/libwxlogin-mock.a $(B)/libwxlogin.a $(PKG_LIBS) $(TEST_LIBS) $(LDFLAGS)

build-fuzz/fuzz/%: fuzz/%.c fuzz/fuzz.h build-fuzz/libwxlogin-mock.a build-fuzz/libwxlogin.a
	@mkdir -p $(dir $@)
	clang $(CFLAGS_BASE) -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all $(PKG_CFLAGS) -Wno-missing-prototypes -o $@ $< \
	    build-fuzz/libwxlogin-mock.a build-fuzz/libwxlogin.a $(PKG_LIBS)

fuzz-build: | $(DEPS_STAMP)
	$(MAKE) B=build-fuzz $(FUZZ_BIN)

# Every driver over its committed corpus, then FUZZ_SECONDS of fuzzing each (fuzz/run.sh).
fuzz: fuzz-build
	bash fuzz/run.sh $(FUZZ_SECONDS)

# valgrind memcheck over a representative e2e subset (slow: not part of make test).
valgrind: build
	bash tests/valgrind/run.sh

# What make test runs: the corpora, plus 10 s of each driver.
fuzz-check: fuzz-build
	bash fuzz/run.sh 10

unit: build
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; (cd tests/unit && ../../$$t); done

e2e: build
	WXLOGIN_BIN=$(CURDIR)/$(B)/wxlogin $(PY) -m pytest -q -p no:cacheprovider tests/e2e

# One flavour: build, unit tests, end-to-end tests.
test-one: unit e2e

# Everything, three times: the normal build, then the same suite under ASan+UBSan and under
# ThreadSanitizer; then every fuzz driver over its corpus and for 10 s.
test: deps format-check
	$(MAKE) B=build test-one
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    $(MAKE) B=build-asan test-one
	$(MAKE) tsan
	$(MAKE) fuzz-check
	@echo "make test: all suites passed (normal, ASan+UBSan and TSan builds, fuzz drivers)"

asan:
	$(MAKE) B=build-asan build

# The unit and end-to-end suites under ThreadSanitizer (the exchange table, the token, the
# session cache, the store writer and the wait lists are shared between threads).
tsan: | $(DEPS_STAMP)
	TSAN_OPTIONS="second_deadlock_stack=1" WXLOGIN_TSAN=1 $(MAKE) B=build-tsan test-one

run: deps
	$(MAKE) B=build $(B)/wxlogin $(B)/wxlogin-mock
	bash scripts/run.sh

bench: deps
	$(MAKE) B=build $(B)/wxlogin $(B)/wxlogin-mock
	bash bench/run.sh

FORMAT_FILES = $(shell find src tests/unit fuzz -name '*.[ch]' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)

format-check: | $(DEPS_STAMP)
	@clang-format --dry-run --Werror $(FORMAT_FILES) || \
	    (echo "formatting differs from .clang-format: run 'make format'"; exit 1)

clean:
	rm -rf build build-asan build-tsan build-fuzz $(DEPS_STAMP)

-include $(OBJ:.o=.d)
