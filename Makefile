# Amora build. `make` builds everything, `make test` runs the tests,
# `make asan` runs them under ASan+UBSan, `make tsan` runs the in-process
# stress programs under TSan, `make bench` runs the benchmarks, `make deps`
# installs the Debian packages the build needs, `make check` checks the
# module graph (run by `make test`). `make install` installs amorad, amora,
# libamora (.so with its SONAME links, and .a), amora.h, amora.pc, the
# systemd unit and the config example under PREFIX (default /usr/local;
# DESTDIR for staging; BINDIR, LIBDIR, INCLUDEDIR, PKGCONFIGDIR, SYSCONFDIR,
# SYSTEMDUNITDIR override single places); `make uninstall` removes exactly
# those files.
#
# Objects go to $(BUILD) (default build/); sanitizer builds use their own
# directories so they never mix with the normal objects. Header dependencies
# are tracked with -MMD, so touching a header rebuilds what includes it.

BUILD ?= build
CC ?= cc
OPT ?= -O2
CFLAGS ?= $(OPT) -g -Wall -Wextra -fno-omit-frame-pointer -std=gnu11 -msse4.2
CFLAGS += $(EXTRA_CFLAGS)
CFLAGS += -fPIC
# Only what amora.h marks AMORA_API leaves libamora.so (with the version
# script libclient/libamora.map). Visibility plays no part in static
# linking: amorad, the CLI, perf and the tests still call shm_* and the
# rest from the .a files.
CFLAGS += -fvisibility=hidden
CPPFLAGS += -I. -MMD -MP -D_GNU_SOURCE \
	-DAMORA_BUILD_DIR='"$(BUILD)"' -DAMORA_EXTRA_LDFLAGS='"$(EXTRA_LDFLAGS)"'
LDFLAGS += $(EXTRA_LDFLAGS)
SHM_LIBS = -lisal -lpthread
# The engine's own: checkpoints are LZ4 frames (shardd/ckptfile.c).
ENGINE_LIBS = -llz4

# The version's one home is shm/version.h; the shared library is
# libamora.so.MAJOR.MINOR.PATCH with SONAME libamora.so.MAJOR.
version_of = $(shell sed -n 's/^.define AMORA_VERSION_$(1) \([0-9][0-9]*\).*/\1/p' shm/version.h)
VERSION_MAJOR := $(call version_of,MAJOR)
VERSION := $(VERSION_MAJOR).$(call version_of,MINOR).$(call version_of,PATCH)
SONAME := libamora.so.$(VERSION_MAJOR)

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
SYSCONFDIR ?= $(PREFIX)/etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system

PACKAGES = gcc make pkg-config libc6-dev clang libclang-rt-14-dev libbpf-dev libelf-dev bpftool \
	systemtap-sdt-dev libcriterion-dev liblz4-dev lz4 libxxhash-dev libisal-dev valgrind \
	liblmdb-dev redis-tools gnuplot-nox python3

SHM_SRC := $(wildcard shm/*.c)
SHM_OBJ := $(SHM_SRC:%.c=$(BUILD)/%.o)
# The engine (amorad and the shard loop it forks) minus its main(), so
# tests can link its parts; the client library minus the CLI.
ENGINE_SRC := $(filter-out coordinator/main.c,$(wildcard coordinator/*.c shardd/*.c))
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
LIB_SRC := $(filter-out libclient/amora-cli.c,$(wildcard libclient/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
# Starting, attaching to and stopping a real amorad: the tests' and the
# benchmarks' (tests/daemon.h).
DAEMON_OBJ := $(BUILD)/tests/daemon.o
STRESS_SRC := $(wildcard tests/stress_*.c)
STRESS_BIN := $(STRESS_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(filter-out perf/amora-trace.c perf/amora-trace.bpf.c,$(wildcard perf/*.c))
BENCH_BIN := $(BENCH_SRC:perf/%.c=$(BUILD)/perf/%)
# The benchmarks' parts (perf/lib/), linked into each perf/*.c program.
BENCH_LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard perf/lib/*.c))
LIBBENCH := $(BUILD)/libbench.a
FUZZ_SRC := $(wildcard tests/fuzz_*.c)

LIBSHM := $(BUILD)/libshm.a
LIBENGINE := $(BUILD)/libamorad.a
LIBAMORA := $(BUILD)/libamora.a
LIBAMORA_SO := $(BUILD)/libamora.so
LIBAMORA_REAL := $(BUILD)/libamora.so.$(VERSION)
AMORAD := $(BUILD)/amorad
CLI := $(BUILD)/amora
TESTS := $(BUILD)/tests/amora-tests
TRACE := $(BUILD)/perf/amora-trace

.PHONY: all run test run-tests check asan tsan bench run-bench bench-probes run-bench-probes fuzz deps \
	install uninstall clean
.SUFFIXES:
.SECONDARY:

all: $(AMORAD) $(CLI) $(LIBAMORA) $(LIBAMORA_SO) $(BUILD)/include/amora.h $(TESTS) $(STRESS_BIN) $(BENCH_BIN) $(TRACE)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIBSHM): $(SHM_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(LIBENGINE): $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(LIBAMORA): $(LIB_OBJ) $(SHM_OBJ)
	@rm -f $@
	ar rcs $@ $^

# -z defs: the .so names every library it needs (not under a sanitizer,
# whose runtime clang leaves to the program).
$(LIBAMORA_REAL): $(LIB_OBJ) $(SHM_OBJ) libclient/libamora.map
	$(CC) -shared $(CFLAGS) $(LDFLAGS) -Wl,-soname,$(SONAME) -Wl,--version-script=libclient/libamora.map \
		$(if $(findstring -fsanitize,$(EXTRA_LDFLAGS)),,-Wl,-z,defs) $(LIB_OBJ) $(SHM_OBJ) $(SHM_LIBS) -o $@

# libamora.so -> libamora.so.0 -> libamora.so.0.1.0, as installed.
$(BUILD)/$(SONAME): $(LIBAMORA_REAL)
	ln -sf $(notdir $<) $@

$(LIBAMORA_SO): $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

# The amora.h that is installed: libclient/amora.h with shm/version.h in
# place of its include, so that it needs no other header of this tree.
$(BUILD)/include/amora.h: libclient/amora.h shm/version.h
	@mkdir -p $(dir $@)
	sed -e '/^#include "shm\/version.h"$$/{r shm/version.h' -e 'd;}' libclient/amora.h > $@.tmp
	@if grep -n '^#include "' $@.tmp; then echo "$@: includes a header of the tree" >&2; exit 1; fi
	mv $@.tmp $@

$(AMORAD): $(BUILD)/coordinator/main.o $(LIBENGINE) $(LIBSHM)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(ENGINE_LIBS) $(SHM_LIBS) -o $@

$(CLI): $(BUILD)/libclient/amora-cli.o $(LIBAMORA)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(SHM_LIBS) -o $@

# Tests run the real programs (amorad, amora) and install everything into a
# temp dir (tests/test_install.c), so they depend on what that installs.
$(TESTS): $(TEST_OBJ) $(DAEMON_OBJ) $(LIBENGINE) $(LIBAMORA) $(LIBSHM) $(AMORAD) $(CLI) $(LIBAMORA_SO) \
		$(BUILD)/include/amora.h
	$(CC) $(CFLAGS) $(LDFLAGS) $(TEST_OBJ) $(DAEMON_OBJ) $(LIBENGINE) $(LIBAMORA) $(LIBSHM) -lcriterion $(ENGINE_LIBS) $(SHM_LIBS) -o $@

$(BUILD)/tests/stress_%: $(BUILD)/tests/stress_%.o $(LIBSHM)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(SHM_LIBS) -o $@

$(LIBBENCH): $(BENCH_LIB_OBJ) $(DAEMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/perf/%: $(BUILD)/perf/%.o $(LIBBENCH) $(LIBAMORA) $(AMORAD)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(LIBBENCH) $(LIBAMORA) $(SHM_LIBS) -llmdb -lm -o $@

# amora-trace: a libbpf CO-RE skeleton. vmlinux.h comes from the running
# kernel's BTF; the BPF object is built by clang, its skeleton by bpftool.
$(BUILD)/perf/vmlinux.h:
	@mkdir -p $(dir $@)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BUILD)/perf/amora-trace.bpf.o: perf/amora-trace.bpf.c perf/amora-trace.h $(BUILD)/perf/vmlinux.h
	clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I. -I$(BUILD)/perf \
		-idirafter /usr/include/$(shell $(CC) -dumpmachine) -c $< -o $@

$(BUILD)/perf/amora-trace.skel.h: $(BUILD)/perf/amora-trace.bpf.o
	bpftool gen skeleton $< name amora_trace_bpf > $@

$(BUILD)/perf/amora-trace.o: perf/amora-trace.c $(BUILD)/perf/amora-trace.skel.h
	$(CC) $(CPPFLAGS) -I$(BUILD) $(CFLAGS) -c $< -o $@

$(TRACE): $(BUILD)/perf/amora-trace.o
	$(CC) $(CFLAGS) $(LDFLAGS) $< -lbpf -lelf -o $@

# The main job: installs what is missing, builds, runs amorad in the
# foreground on ./amora-data (Ctrl-C stops it cleanly). RUN_ARGS adds options.
run: deps
	@$(MAKE) --no-print-directory $(AMORAD) $(CLI) $(LIBAMORA) $(LIBAMORA_SO) $(BUILD)/include/amora.h
	@echo "amorad: data in amora-data/, socket amora-data/amora.sock. From another terminal:"
	@echo "  $(CLI) -s amora-data/amora.sock set user:1 alice"
	@echo "  $(CLI) -s amora-data/amora.sock get user:1"
	@echo "  redis-cli -s amora-data/amora.sock ping"
	@echo "Ctrl-C stops it (shards drain and sync first)."
	@exec $(AMORAD) --data-dir amora-data $(RUN_ARGS)

# The test command: installs what is missing, builds, runs every test.
test: deps
	@$(MAKE) --no-print-directory run-tests

# The module graph (DESIGN.md): includes name their folder, dependencies
# point one way. Part of every test run.
check:
	@tests/check_includes.sh

run-tests: check $(TESTS) $(STRESS_BIN) $(TRACE)
	$(TEST_ENV) $(TESTS) --jobs 2
	@for s in $(STRESS_BIN); do echo "== $$s"; $(TEST_ENV) $$s || exit 1; done

asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan \
		EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
		EXTRA_LDFLAGS="-fsanitize=address,undefined" \
		TEST_ENV="ASAN_OPTIONS=handle_segv=0 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp" \
		run-tests

# (handle_segv=0: some tests expect a SIGSEGV, e.g. writing a read-only view.)

# Criterion cannot run under TSan, so TSan covers the standalone stress
# programs (threads inside one process).
tsan: deps
	@$(MAKE) --no-print-directory BUILD=build/tsan \
		EXTRA_CFLAGS="-fsanitize=thread" EXTRA_LDFLAGS="-fsanitize=thread" $(STRESS_BIN:build/%=build/tsan/%)
	@for s in $(STRESS_SRC:tests/%.c=build/tsan/tests/%); do echo "== $$s (tsan)"; \
		TSAN_OPTIONS=halt_on_error=1 $$s || exit 1; done

bench: deps
	@$(MAKE) --no-print-directory run-bench

# amora-bench writes its figures to BENCH_JSON too, and perf/plot draws
# them into BENCH_PNG (the README's picture). bench_probes has its own target.
BENCH_JSON ?= docs/bench.json
BENCH_PNG ?= docs/bench.png
run-bench: $(BENCH_BIN)
	@mkdir -p $(dir $(BENCH_JSON)) $(dir $(BENCH_PNG))
	@for b in $(filter-out $(BUILD)/perf/bench_probes,$(BENCH_BIN)); do \
		if [ $$b = $(BUILD)/perf/amora-bench ]; then echo "== $$b --json $(BENCH_JSON)"; $$b --json $(BENCH_JSON) || exit 1; \
		else echo "== $$b"; $$b || exit 1; fi; done
	perf/plot bench $(BENCH_JSON) $(BENCH_PNG)

# tests/test_plot.c runs amora-bench --json and perf/plot on its output.
run-tests: $(BUILD)/perf/amora-bench

# What the USDT probes cost (perf/bench_probes.c): this build's
# bench_probes against its twin built with -DAMORA_NO_PROBES in
# $(BUILD)/noprobes, then with amora-trace attached; the last traced run's
# histograms are drawn into $(BUILD)/bench-probes-trace.png.
NOPROBES_BUILD = $(BUILD)/noprobes
bench-probes: deps
	@$(MAKE) --no-print-directory run-bench-probes

run-bench-probes: $(BUILD)/perf/bench_probes $(TRACE)
	@$(MAKE) --no-print-directory BUILD=$(NOPROBES_BUILD) EXTRA_CFLAGS="$(EXTRA_CFLAGS) -DAMORA_NO_PROBES" \
		$(NOPROBES_BUILD)/perf/bench_probes
	@rm -f $(BUILD)/bench-probes-trace.json
	$(BUILD)/perf/bench_probes --noprobes $(NOPROBES_BUILD)/perf/bench_probes --trace $(TRACE) \
		--trace-json $(BUILD)/bench-probes-trace.json
	@if [ -s $(BUILD)/bench-probes-trace.json ]; then \
		perf/plot trace $(BUILD)/bench-probes-trace.json $(BUILD)/bench-probes-trace.png && \
		echo "drawn: $(BUILD)/bench-probes-trace.png"; fi

# libFuzzer targets over the parsers of untrusted bytes; FUZZ_SECONDS each.
FUZZ_SECONDS ?= 30
fuzz: deps
	@mkdir -p $(BUILD)/fuzz
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
		clang -O1 -g -std=gnu11 -msse4.2 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined \
			$$f $(SHM_SRC) $(ENGINE_SRC) $(ENGINE_LIBS) $(SHM_LIBS) -o $(BUILD)/fuzz/$$n || exit 1; \
		echo "== $$n ($(FUZZ_SECONDS) s)"; \
		$(BUILD)/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; done

# Installs missing Debian packages (as root), or says exactly what to run.
deps:
	@missing=""; for p in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing"; \
		if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; sh -c "$$cmd" || exit 1; \
		else echo "missing packages:$$missing"; echo "run as root: $$cmd"; exit 1; fi; \
	fi

# ldconfig only for a real install as root (DESTDIR empty): the loader finds
# libamora.so.0 in LIBDIR through its cache.
install: $(AMORAD) $(CLI) $(LIBAMORA_SO) $(LIBAMORA) $(BUILD)/include/amora.h
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
		$(DESTDIR)$(SYSCONFDIR)/amora $(DESTDIR)$(SYSTEMDUNITDIR)
	install -m 755 $(AMORAD) $(CLI) $(DESTDIR)$(BINDIR)/
	install -m 755 $(LIBAMORA_REAL) $(DESTDIR)$(LIBDIR)/
	ln -sf $(notdir $(LIBAMORA_REAL)) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libamora.so
	install -m 644 $(LIBAMORA) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(BUILD)/include/amora.h $(DESTDIR)$(INCLUDEDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCLUDEDIR@|$(INCLUDEDIR)|; s|@VERSION@|$(VERSION)|' \
		libclient/amora.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/amora.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/amora.pc
	sed -e '1i # systemd unit for amorad, installed by make install. Copy' \
		-e '1i # $(SYSCONFDIR)/amora/amorad.conf.example to amorad.conf, edit it, then' \
		-e '1i # systemctl daemon-reload && systemctl enable --now amorad' \
		-e '1,/^\[Unit\]/{/^#/d;}' \
		-e 's|/usr/local/bin/amorad|$(BINDIR)/amorad|; s|/etc/amora/amorad.conf|$(SYSCONFDIR)/amora/amorad.conf|' \
		deploy/amorad.service > $(DESTDIR)$(SYSTEMDUNITDIR)/amorad.service
	chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/amorad.service
	install -m 644 deploy/amorad.conf $(DESTDIR)$(SYSCONFDIR)/amora/amorad.conf.example
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig; fi

# Removes the files install put (not amorad.conf made from the example:
# etc/amora goes only if empty).
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/amorad $(DESTDIR)$(BINDIR)/amora \
		$(DESTDIR)$(LIBDIR)/$(notdir $(LIBAMORA_REAL)) $(DESTDIR)$(LIBDIR)/$(SONAME) \
		$(DESTDIR)$(LIBDIR)/libamora.so $(DESTDIR)$(LIBDIR)/libamora.a \
		$(DESTDIR)$(INCLUDEDIR)/amora.h $(DESTDIR)$(PKGCONFIGDIR)/amora.pc \
		$(DESTDIR)$(SYSTEMDUNITDIR)/amorad.service $(DESTDIR)$(SYSCONFDIR)/amora/amorad.conf.example
	@if [ -d $(DESTDIR)$(SYSCONFDIR)/amora ]; then rmdir --ignore-fail-on-non-empty $(DESTDIR)$(SYSCONFDIR)/amora; fi
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig; fi

clean:
	rm -rf build

-include $(SHM_OBJ:.o=.d) $(ENGINE_OBJ:.o=.d) $(LIB_OBJ:.o=.d) $(BUILD)/coordinator/main.d \
	$(BUILD)/libclient/amora-cli.d $(TEST_OBJ:.o=.d) $(STRESS_BIN:=.d) $(BENCH_BIN:=.d) \
	$(BENCH_LIB_OBJ:.o=.d) $(DAEMON_OBJ:.o=.d)
