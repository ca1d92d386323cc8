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
        fuzz fuzz-build fuzz-check tsan valgrind openapi-deps client-test install uninstall deb

all: build

deps: $(DEPS_STAMP)
$(DEPS_STAMP): scripts/install-deps.sh
	bash scripts/install-deps.sh
	@touch $@

# The OpenAPI 3.1 validator tests/e2e/test_openapi.py runs (an npm package: Debian has none).
OPENAPI_NPM := tests/e2e/openapi-validator
OPENAPI_STAMP := $(OPENAPI_NPM)/node_modules/.installed
openapi-deps: $(OPENAPI_STAMP)
$(OPENAPI_STAMP): $(OPENAPI_NPM)/package.json $(OPENAPI_NPM)/package-lock.json | $(DEPS_STAMP)
	cd $(OPENAPI_NPM) && npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

build: $(B)/wxlogin $(B)/wxlogin-mock $(B)/wxlogin-failalloc $(UNIT_BIN)

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

# wxlogin with allocation-failure injection (tests/alloc/failalloc.c; tests/e2e/
# test_alloc_failure.py): the same objects, our calls to the allocating functions below wrapped.
FAILALLOC_WRAP := malloc calloc realloc strdup aligned_alloc asprintf json_loadb json_dumps \
    json_pack json_string json_array json_array_append_new EVP_MD_CTX_new EVP_CIPHER_CTX_new \
    curl_easy_init curl_slist_append curl_url MHD_create_response_from_buffer \
    MHD_add_response_header
$(B)/obj/failalloc.o: tests/alloc/failalloc.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

$(B)/wxlogin-failalloc: $(B)/obj/main.o $(B)/obj/failalloc.o $(B)/libwxlogin.a
	$(CC) $(OPT) -pthread -o $@ $^ $(PKG_LIBS) $(LDFLAGS) \
	    $(foreach f,$(FAILALLOC_WRAP),-Wl,--wrap=$(f))

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

e2e: build openapi-deps
	WXLOGIN_BIN=$(CURDIR)/$(B)/wxlogin $(PY) -m pytest -q -p no:cacheprovider tests/e2e

# One flavour: build, unit tests, end-to-end tests.
test-one: unit e2e

# The Mini Program client library (clients/miniprogram): its dev tools pinned by package-lock.json
# (npm ci), the declarations and the example type-checked, then node --test against this
# flavour's wxlogin and wxlogin-mock. Runs once, against the normal build.
CLIENT_DIR := clients/miniprogram
client-test: build
	cd $(CLIENT_DIR) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	cd $(CLIENT_DIR) && npm run --silent typecheck
	cd $(CLIENT_DIR) && WXLOGIN_BIN=$(CURDIR)/$(B)/wxlogin npm test --silent

# Everything, three times: the normal build, then the same suite under ASan+UBSan and under
# ThreadSanitizer; then every fuzz driver over its corpus and for 10 s.
test: deps format-check
	$(MAKE) B=build test-one
	$(MAKE) B=build client-test
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    $(MAKE) B=build-asan test-one
	$(MAKE) tsan
	$(MAKE) fuzz-check
	@echo "make test: all suites passed (normal, ASan+UBSan and TSan builds, fuzz drivers, Mini Program client)"

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
	/usr/bin/python3 bench/run.py

FORMAT_FILES = $(shell find src tests/unit tests/alloc fuzz -name '*.[ch]' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)

format-check: | $(DEPS_STAMP)
	@clang-format --dry-run --Werror $(FORMAT_FILES) || \
	    (echo "formatting differs from .clang-format: run 'make format'"; exit 1)

clean:
	rm -rf build build-asan build-tsan build-fuzz $(DEPS_STAMP) $(OPENAPI_NPM)/node_modules

# ---- make install / uninstall / deb (README.md, "Install"; docs/operations.md) ----
# GNU-style directories. The configuration goes to /etc/wxlogin whatever the PREFIX: the
# systemd unit reads it there (ConfigurationDirectory=). systemd also reads units and sysusers
# files under /usr/local/lib.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
SYSCONFDIR  ?= /etc
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/wxlogin
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
INSTALL     ?= install
DOC_FILES   := README.md CHANGELOG.md SECURITY.md LICENSE wxlogin.conf.example \
               $(sort $(wildcard docs/*.md docs/*.yaml)) contrib/nginx/wxlogin-auth.conf

# The binaries, the unit (its paths made those of this install), the sysusers file, the man
# page and the docs. An existing wxlogin.conf is kept (it is the operator's), and no user is
# created: run systemd-sysusers for that (docs/operations.md).
install: $(B)/wxlogin $(B)/wxlogin-mock
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/wxlogin
	$(INSTALL) -m 0755 $(B)/wxlogin $(B)/wxlogin-mock $(DESTDIR)$(BINDIR)/
	sed -e 's#/usr/bin/wxlogin#$(BINDIR)/wxlogin#g' -e 's#/etc/wxlogin/#$(SYSCONFDIR)/wxlogin/#g' \
	    contrib/systemd/wxlogin.service > $(DESTDIR)$(SYSTEMDUNITDIR)/wxlogin.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/wxlogin.service
	$(INSTALL) -m 0644 contrib/systemd/wxlogin.sysusers $(DESTDIR)$(SYSUSERSDIR)/wxlogin.conf
	$(INSTALL) -m 0644 docs/wxlogin.8 $(DESTDIR)$(MANDIR)/man8/wxlogin.8
	$(INSTALL) -m 0644 $(DOC_FILES) $(DESTDIR)$(DOCDIR)/
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/wxlogin/wxlogin.conf ]; then \
	    echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/wxlogin/wxlogin.conf"; \
	else \
	    $(INSTALL) -m 0640 contrib/systemd/wxlogin.conf $(DESTDIR)$(SYSCONFDIR)/wxlogin/wxlogin.conf; \
	fi

# Removes what install put there, except the configuration and the state (the database).
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/wxlogin $(DESTDIR)$(BINDIR)/wxlogin-mock \
	    $(DESTDIR)$(SYSTEMDUNITDIR)/wxlogin.service $(DESTDIR)$(SYSUSERSDIR)/wxlogin.conf \
	    $(DESTDIR)$(MANDIR)/man8/wxlogin.8
	rm -rf $(DESTDIR)$(DOCDIR)

# The Debian packages (wxlogin, wxlogin-mock), built by dpkg-buildpackage from a copy of the
# sources with contrib/debian/ as its debian/, so that dpkg-buildpackage's output (written to
# the parent of the source tree) lands in build/deb/ and debian/rules cleans nothing here.
DEB_DIR     := build/deb
DEB_SOURCES := Makefile src docs contrib scripts wxlogin.conf.example README.md CHANGELOG.md \
               SECURITY.md LICENSE
deb: | $(DEPS_STAMP)
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/src
	tar -c $(DEB_SOURCES) | tar -x -C $(DEB_DIR)/src
	cp -r contrib/debian $(DEB_DIR)/src/debian
	cd $(DEB_DIR)/src && dpkg-buildpackage -b -us -uc -Jauto
	@ls -l $(DEB_DIR)/*.deb

-include $(OBJ:.o=.d)
