# uro_recommender: an Erlang port program serving LibRecommender from an embedded CPython.
#
#   make          build priv/uro_recommender (and priv/echo_port, the benchmark's baseline);
#                 with MIX_APP_PATH set (`mix compile` sets it), lay the port out in
#                 $(MIX_APP_PATH)/priv too (see "As a Mix dependency" below)
#   make setup    Debian packages and the Python virtualenv (idempotent; seconds when done)
#   make test     everything CI runs: C unit tests (plain, then ASan+UBSan), 30 s of the codec
#                 fuzzer, pytest, the term-replay sessions, the frame property test, the model
#                 matrix, the ExUnit suite, the relocation check, a new Mix host depending on
#                 this repository (test/host/)
#   make fuzz     the codec fuzzer and the frame fuzzer, FUZZ_SECONDS (600) each
#   make soak     10^6 mixed calls against one port, RSS sampled: bench/SOAK.md
#   make install PREFIX=DIR   a movable tree: port, python/uro_rec, sql/, venv/ (see below)
#   make demo     uro's story on uro-shaped tables: visits recorded, a scheduled run, the gate,
#                 the lists read back by SQL, forget_user, a refused run (bench/uro_demo.exs)
#   make bench    latency against the bare echo port, interleaved call by call; the database
#                 benchmark; the recorder; retraining on 10 % new data against full training;
#                 throughput with 1, 8 and 64 concurrent clients, batching off and on;
#                 recommend against catalogue size (bench-catalogue)
#
# The virtualenv lives outside the checkout (scripts/setup.sh says where); override with
# URO_REC_VENV=/path. Its interpreter's libpython is the one we link, by soname: no path of
# this machine goes into the binary (the port finds its files at run time: c_src/paths.c).

VERSION  := 0.1.0
PROTOCOL := 1

VENV     ?= $(shell bash scripts/setup.sh --path)
PYTHON   := $(VENV)/bin/python
# pytest, psycopg, SQLAlchemy: test-only packages, kept out of the runtime virtualenv.
TESTPATH := $(shell bash scripts/setup.sh --test-path)
TOP      := $(CURDIR)

# Asked of the virtualenv's python only when it exists (make setup creates it).
py_var    = $(shell test -x $(PYTHON) && $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("$(1)") or "")')
PY_INC   := $(shell test -x $(PYTHON) && $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
PY_LIBDIR = $(call py_var,LIBDIR)
PY_LDVER  = $(call py_var,LDVERSION)

EI_ROOT  := $(shell erl -noshell -eval 'io:format("~s", [code:lib_dir(erl_interface)]), halt().' 2>/dev/null)

CC       ?= cc
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS   ?= -O2 -g
# No path of this machine in any object (the debug info's too): the binary travels
# (make test-relocate checks it).
NO_BUILD_PATH := -ffile-prefix-map=$(TOP)=.
CPPFLAGS += -I$(PY_INC) -I$(EI_ROOT)/include -I$(shell pg_config --includedir 2>/dev/null) \
            -DURO_REC_VERSION='"$(VERSION)"' -DURO_REC_PROTOCOL=$(PROTOCOL) \
            -DURO_REC_VENV_HASH='"$(VENV_HASH)"' $(NO_BUILD_PATH)
LDLIBS_PY = -L$(PY_LIBDIR) $(PY_RPATH) -lpython$(PY_LDVER) -ldl -lm
LDLIBS_EI = -L$(EI_ROOT)/lib -lei -lpthread
LDLIBS_PQ = -lpq -lz

PORT_SRC := c_src/main.c c_src/erlcmd.c c_src/request.c c_src/term.c c_src/term_check.c c_src/term_canon.c \
            c_src/frames.c c_src/pybridge.c c_src/commands.c c_src/stats.c c_src/check.c \
            c_src/deadline.c c_src/db_connection.c c_src/db_columns.c c_src/db_execute.c \
            c_src/db_wait.c c_src/copytext.c c_src/paths.c c_src/rank_py.c
HDRS     := $(wildcard c_src/*.h)
# The same kernel as the extension module _uro_rank, for the Python tests (outside the port
# it is what uro_rec.shortlist imports; python/tests/conftest.py puts _build/py on the path).
RANK_EXT  = _build/py/_uro_rank$(call py_var,EXT_SUFFIX)
RANK_OBJ := _build/rank.o _build/rank_fast.o

.PHONY: all build setup test test-all test-c test-sanitize test-python test-replay test-matrix \
        test-property test-fuzz fuzz soak test-elixir test-host test-db test-db-waits \
        check-elixir-newer demo bench bench-db bench-interactions bench-retrain \
        bench-throughput bench-throughput-run bench-catalogue bench-kernel clean

# The public targets run the set-up first, then a fresh make that sees the virtualenv and the
# Erlang headers it may just have installed (the variables above are read when make starts).
all: setup
	@$(MAKE) --no-print-directory build
test: setup
	@$(MAKE) --no-print-directory test-all
demo: setup
	@$(MAKE) --no-print-directory build
	bash scripts/demo.sh priv/uro_recommender
bench: setup
	@$(MAKE) --no-print-directory build _build/rank_floor _build/rank_groups
	escript bench/bench.escript priv/uro_recommender priv/echo_port $(PYTHON)
	PYTHONPATH=$(TESTPATH) escript bench/db_bench.escript priv/uro_recommender $(PYTHON)
	URO_REC_PORT=$(TOP)/priv/uro_recommender mix run bench/interactions_bench.exs
	PYTHONPATH=$(TESTPATH) $(PYTHON) bench/retrain_bench.py --out bench/RETRAIN_BENCH.txt
	-@$(MAKE) --no-print-directory bench-throughput-run
	taskset -c 0 _build/rank_groups
	PYTHONPATH=$(TESTPATH) $(PYTHON) bench/catalogue_bench.py priv/uro_recommender _build/rank_floor
# Throughput with 1, 8 and 64 concurrent clients, pools of 1, 2 and 4 ports, batching off and on
# (UroRecommender.Batch); the plot bench/throughput.png: bench/README.md, "Throughput"
bench-throughput: setup
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory bench-throughput-run
bench-throughput-run:
	URO_REC_PORT=$(TOP)/priv/uro_recommender BENCH_PYTHON=$(PYTHON) BENCH_PLOT_PYTHONPATH=$(TESTPATH) \
	  mix run bench/throughput_bench.exs
# The ranking kernel alone: a user ranked alone against in groups of 2 to 32 (bench/README.md)
bench-kernel: setup
	@$(MAKE) --no-print-directory _build/rank_groups
	taskset -c 0 _build/rank_groups
# Recommend latency at 10k, 100k and 1M items x 32 and 64 dims against the C floor and
# LibRecommender, list equality, a pool's PSS, load time; plot bench/catalogue.png
bench-catalogue: setup
	@$(MAKE) --no-print-directory build _build/rank_floor
	PYTHONPATH=$(TESTPATH) $(PYTHON) bench/catalogue_bench.py priv/uro_recommender _build/rank_floor
# The recorder (UroRecommender.Interactions) against a bare GenServer.cast: bench/INTERACTIONS_BENCH.md
bench-interactions: setup
	@$(MAKE) --no-print-directory build
	URO_REC_PORT=$(TOP)/priv/uro_recommender mix run bench/interactions_bench.exs
# Retraining on 10 % new data against full training: bench/RETRAIN_BENCH.txt
bench-retrain: setup
	PYTHONPATH=$(TESTPATH) $(PYTHON) bench/retrain_bench.py --out bench/RETRAIN_BENCH.txt
bench-db: setup
	@$(MAKE) --no-print-directory build
	PYTHONPATH=$(TESTPATH) escript bench/db_bench.escript priv/uro_recommender $(PYTHON)

setup:
	@bash scripts/setup.sh >/dev/null

build: priv/uro_recommender priv/echo_port $(RANK_EXT)

priv/uro_recommender: $(PORT_SRC) $(HDRS) $(RANK_OBJ) Makefile python/requirements.txt
	@mkdir -p priv
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $(PORT_SRC) $(RANK_OBJ) $(LDLIBS_PY) $(LDLIBS_EI) $(LDLIBS_PQ)
	$(call ship_libpython,priv)

# The ranking kernel (c_src/rank.c, rank_fast.c) at -O3, portable (no -march=native: the
# binary travels; on x86-64 the float32 pass is compiled twice, AVX2+FMA and baseline, and the
# CPU picks at run time). The exact pass (rank.c) with -ffp-contract=off: it must round every
# product as the reference does; the float32 pass may fuse. RANK_CFLAGS may add
# -march=native for a build that never leaves its machine.
RANK_CFLAGS ?= -O3
_build/rank.o: c_src/rank.c c_src/rank.h c_src/rank_internal.h Makefile
	@mkdir -p _build
	$(CC) $(CFLAGS) $(RANK_CFLAGS) -ffp-contract=off -fPIC $(WARN) $(NO_BUILD_PATH) -c -o $@ $<
_build/rank_fast.o: c_src/rank_fast.c c_src/rank.h c_src/rank_internal.h Makefile
	@mkdir -p _build
	$(CC) $(CFLAGS) $(RANK_CFLAGS) -ffp-contract=fast -fPIC $(WARN) $(NO_BUILD_PATH) -c -o $@ $<

$(RANK_EXT): c_src/rank_py.c c_src/rank_py.h $(RANK_OBJ)
	@mkdir -p _build/py
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -DURO_RANK_EXTENSION -fPIC -shared -o $@ $< $(RANK_OBJ)

# The benchmark's floor: built for this CPU on purpose (it is the best this machine can do).
_build/rank_floor: bench/rank_floor.c
	@mkdir -p _build
	$(CC) -O3 -march=native -Wall -o $@ $<

# The kernel alone, one user at a time against groups: the objects the port links, as built.
_build/rank_groups: bench/rank_groups.c $(RANK_OBJ)
	$(CC) $(CFLAGS) -O2 -Ic_src $(WARN) -o $@ $< $(RANK_OBJ) -lm

priv/echo_port: c_src/echo_port.c c_src/erlcmd.c c_src/erlcmd.h Makefile
	@mkdir -p priv
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ c_src/echo_port.c c_src/erlcmd.c $(LDLIBS_EI)

# ---- tests ----------------------------------------------------------------------------------
UNIT_SRC := c_src/erlcmd.c c_src/term.c c_src/term_check.c c_src/term_canon.c c_src/request.c \
            c_src/copytext.c c_src/paths.c c_src/rank.c c_src/rank_fast.c
TESTS    := test_erlcmd test_term test_copytext test_paths test_rank
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

_build/%: test/c/%.c $(UNIT_SRC) $(HDRS)
	@mkdir -p _build
	$(CC) $(CPPFLAGS) -Ic_src -O1 -g $(WARN) -o $@ $< $(UNIT_SRC) $(LDLIBS_PY) $(TEST_FLAGS) $(LDLIBS_EI) -lz -lcmocka

_build/san/%: test/c/%.c $(UNIT_SRC) $(HDRS)
	@mkdir -p _build/san
	$(CC) $(CPPFLAGS) -Ic_src -O1 -g $(SAN) $(WARN) -o $@ $< $(UNIT_SRC) $(LDLIBS_PY) $(TEST_FLAGS) $(LDLIBS_EI) -lz -lcmocka

test-c: $(addprefix _build/,$(TESTS))
	@for t in $^; do echo "== $$t"; PYTHONHOME= ./$$t || exit 1; done

# Python's own allocations are not ours to police here: leaks are checked on our code paths
# by the unit tests' explicit reference counting, so LeakSanitizer is told to stay quiet.
test-sanitize: $(addprefix _build/san/,$(TESTS))
	@for t in $^; do echo "== $$t (ASan+UBSan)"; \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 ./$$t || exit 1; done

test-python: $(RANK_EXT)
	cd python && PYTHONPATH=$(TESTPATH) $(PYTHON) -m pytest -q tests

test-replay: build
	escript test/replay/replay.escript priv/uro_recommender test/replay/*.session

# ---- fuzzing (docs/OPERATIONS.md, "Fuzzing and soak") ------------------------------------------
# libFuzzer over the term codec (test/fuzz/fuzz_term.c), clang with ASan and UBSan. `make fuzz`
# runs it for FUZZ_SECONDS growing test/fuzz/corpus, then the frame-mutation fuzzer against the
# real port for as long; `make test-fuzz` is the 30 s smoke run that make test includes (new
# inputs go to a temporary directory, the committed corpus is only read).
FUZZ_SECONDS ?= 600
FUZZ_SRC := c_src/term.c c_src/term_check.c c_src/term_canon.c c_src/request.c
FUZZ_RUN  = ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 PYTHONHOME=

_build/fuzz/fuzz_term: test/fuzz/fuzz_term.c $(FUZZ_SRC) $(HDRS)
	@mkdir -p _build/fuzz
	clang $(CPPFLAGS) -Ic_src -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	  -fno-omit-frame-pointer -o $@ $< $(FUZZ_SRC) $(LDLIBS_PY) $(TEST_FLAGS) $(LDLIBS_EI) -lz

fuzz: _build/fuzz/fuzz_term build
	@mkdir -p test/fuzz/corpus
	$(FUZZ_RUN) nice -n 10 $< -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
	  test/fuzz/corpus
	nice -n 10 escript test/property.escript priv/uro_recommender --frames 100000000 \
	  --seconds $(FUZZ_SECONDS) --rss-growth-mb 64

test-fuzz: _build/fuzz/fuzz_term
	@rm -rf _build/fuzz/new && mkdir -p _build/fuzz/new
	$(FUZZ_RUN) $< -max_total_time=30 -max_len=4096 -print_final_stats=1 _build/fuzz/new \
	  test/fuzz/corpus

# 10^6 mixed calls against one port, RSS sampled: bench/SOAK.md (bench/soak.escript).
SOAK_CALLS ?= 1000000
soak: build
	nice -n 10 escript bench/soak.escript priv/uro_recommender $(SOAK_CALLS) bench/SOAK.md

# Random and mutated frames against the real port, binary_to_term as the oracle; every frame
# answered once, every reply decodable, RSS bounded (test/property.escript; 60 s at most).
test-property: build
	escript test/property.escript priv/uro_recommender --frames 20000 --seconds 60 --rss-growth-mb 64

test-matrix: build
	escript test/matrix.escript priv/uro_recommender

# mix.exs is at the top; its compiler runs this Makefile again (a no-op after `build`).
test-elixir: build
	URO_REC_PORT=$(TOP)/priv/uro_recommender mix test

# A new Mix host with the one dependency line: compile, run, mix release, Oban, git form
# (test/host/host_test.sh; about a minute: it builds the port from a fresh copy).
test-host:
	bash test/host/host_test.sh

# elixir_stub on a newer Elixir (1.18 in a Debian trixie chroot); not part of `make test`.
check-elixir-newer:
	bash scripts/elixir_newer.sh

# Against the PostgreSQL server on 127.0.0.1:5432 (.ci/run starts it when it is down).
test-db: build
	escript test/db_test.escript priv/uro_recommender

# No database wait holds the port (c_src/db_wait.c) and a refused COPY falls back to INSERT:
# a silent listener, a stalled one, pg_sleep, a PostgreSQL of its own (initdb, as user
# postgres) restarted and frozen mid-call; about a minute.
test-db-waits: build
	escript test/db_waits_test.escript priv/uro_recommender

test-all: build test-c test-sanitize test-fuzz test-python test-replay test-property test-db \
          test-db-waits test-matrix test-elixir \
          test-relocate test-host
	@echo "make test: all suites passed"

clean:
	rm -rf _build priv/uro_recommender priv/echo_port priv/lib

# ---- relocatable runtime, install, the image recipe's checks ---------------------------------
# (docs/OPERATIONS.md; the lookup itself is c_src/paths.c.) The one thing compiled in is the
# hash naming the developer's cached virtualenv, which is not a path.
VENV_HASH := $(shell bash scripts/setup.sh --hash)
# libpython: linked by soname, found by the dynamic linker in the system library path
# (Debian's python3.11). When it is not there (a pyenv python via URO_REC_PYTHON),
# scripts/libpython.sh names it: it is copied to lib/ beside the executable and found through
# the rpath $ORIGIN/lib; the unit tests, which run from _build/ and never travel, get its
# directory as rpath.
PY_SHIP := $(shell bash scripts/libpython.sh $(PYTHON))
ifneq ($(PY_SHIP),)
PY_RPATH       = -Wl,-rpath,'$$ORIGIN/lib'
PY_BUILD_RPATH = -Wl,-rpath,$(PY_LIBDIR)
endif
# The unit tests never travel: they may name the build's virtualenv (test_term.c's numpy).
TEST_FLAGS = -DURO_REC_TEST_VENV='"$(VENV)"' $(PY_BUILD_RPATH)
# $(call ship_libpython,DIR): in a recipe that wrote DIR/uro_recommender.
ship_libpython = $(if $(PY_SHIP),mkdir -p $(1)/lib && cp -p $(PY_SHIP) $(1)/lib/)

# ---- As a Mix dependency ---------------------------------------------------------------------
# `mix compile` runs `make` with MIX_APP_PATH set (elixir_make's contract, see mix.exs): the port,
# python/uro_rec and the SQL files are laid out in $(MIX_APP_PATH)/priv, the directory that
# Application.app_dir(:uro_recommender, "priv") names, where the pool finds them and which
# `mix release` copies. For a path or git dependency Mix makes that directory a symlink to this
# checkout's priv/, which already has that layout (priv/python/uro_rec is a symlink to
# python/uro_rec, and a release copies through symlinks): nothing is copied then, since each
# file is its own source (the `-ef` test). Otherwise (build_embedded, or MIX_APP_PATH given by
# hand) each file is copied when its source is newer.
ifneq ($(strip $(MIX_APP_PATH)),)
MIX_PRIV  := $(MIX_APP_PATH)/priv
MIX_FILES := $(MIX_PRIV)/uro_recommender \
             $(patsubst python/%,$(MIX_PRIV)/python/%,$(wildcard python/uro_rec/*.py)) \
             $(patsubst priv/%,$(MIX_PRIV)/%,$(wildcard priv/sql/*.sql priv/sql/uro/*.sql)) \
             $(if $(PY_SHIP),$(MIX_PRIV)/lib/$(notdir $(PY_SHIP)))
build: $(MIX_FILES)

# Replaces $@ by a rename (a running port keeps its inode). A dangling symlink where the
# directory belongs (Mix's copy of priv/ copies priv/python/uro_rec's link as it is) goes first.
mix_copy_from = @[ -e "$(@D)" ] || rm -f "$(@D)"; [ "$(1)" -ef "$@" ] || { mkdir -p "$(@D)" && \
                cp "$(1)" "$@.tmp" && chmod $(2) "$@.tmp" && mv -f "$@.tmp" "$@" && echo "install $@"; }
mix_copy = $(call mix_copy_from,$<,$(1))

$(MIX_PRIV)/uro_recommender: priv/uro_recommender
	$(call mix_copy,755)
$(MIX_PRIV)/python/uro_rec/%.py: python/uro_rec/%.py
	$(call mix_copy,644)
$(MIX_PRIV)/sql/%.sql: priv/sql/%.sql
	$(call mix_copy,644)
$(MIX_PRIV)/lib/%: priv/uro_recommender
	$(call mix_copy_from,priv/lib/$*,644)
endif

# make install PREFIX=DIR [INSTALL_VENV=copy|link]: executable, python/uro_rec, sql/, venv/
# (and lib/ when libpython travels) in one movable tree; scripts/install.sh. INSTALL_VENV=link
# hard-links the 2.5 GB virtualenv instead of copying it (same file system; for tests).
# install-tree is the same without the set-up (the image recipe brings its own VENV=).
INSTALL_VENV ?= copy
.PHONY: install install-tree test-relocate check-clean-debian
install: setup
	@$(MAKE) --no-print-directory install-tree
install-tree: build
	@test -n "$(PREFIX)" || { echo "usage: make install PREFIX=DIR [INSTALL_VENV=link]" >&2; exit 2; }
	bash scripts/install.sh "$(PREFIX)" "$(VENV)" $(INSTALL_VENV)

# Install to A, mv A B, hide the checkout and the developer cache (tmpfs in a mount
# namespace): the replay sessions pass against B, and the lookup shows B's paths.
test-relocate: build
	bash test/relocate.sh "$(VENV)"

# The image recipe's final stage in a clean Debian 12 root (debootstrap, cached outside the
# checkout): deploy/runtime-packages only, the installed tree, the replay sessions and a
# database round trip against 127.0.0.1:5432. Minutes; not part of `make test`; as root.
check-clean-debian: setup
	@$(MAKE) --no-print-directory build
	bash scripts/clean_debian.sh "$(VENV)"
