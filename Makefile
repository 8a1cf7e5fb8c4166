# uro_recommender: an Erlang port program serving LibRecommender from an embedded CPython.
#
#   make          build priv/uro_recommender (and priv/echo_port, the benchmark's baseline)
#   make setup    Debian packages and the Python virtualenv (idempotent; seconds when done)
#   make test     everything CI runs: C unit tests (plain, then ASan+UBSan), pytest, the
#                 term-replay sessions, the model matrix, the ExUnit suite
#   make demo     the main job: train ALS on generated data through the port, recommend
#   make bench    latency against the bare echo port, interleaved call by call; the database
#                 benchmark; retraining on 10 % new data against full training (bench-retrain)
#
# The virtualenv lives outside the checkout (scripts/setup.sh says where); override with
# URO_REC_VENV=/path. Its interpreter's libpython is the one we link.

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
CPPFLAGS += -I$(PY_INC) -I$(EI_ROOT)/include -I$(shell pg_config --includedir 2>/dev/null) \
            -DURO_REC_VERSION='"$(VERSION)"' -DURO_REC_PROTOCOL=$(PROTOCOL) \
            -DURO_REC_DEFAULT_VENV='"$(VENV)"' -DURO_REC_DEFAULT_PYTHON_DIR='"$(TOP)/python"'
LDLIBS_PY = -L$(PY_LIBDIR) -Wl,-rpath,$(PY_LIBDIR) -lpython$(PY_LDVER) -ldl -lm
LDLIBS_EI = -L$(EI_ROOT)/lib -lei -lpthread
LDLIBS_PQ = -lpq -lz

PORT_SRC := c_src/main.c c_src/erlcmd.c c_src/term.c c_src/frames.c c_src/pybridge.c \
            c_src/commands.c c_src/stats.c c_src/check.c c_src/deadline.c c_src/db.c \
            c_src/copytext.c
HDRS     := $(wildcard c_src/*.h)

.PHONY: all build setup test test-all test-c test-sanitize test-python test-replay test-matrix \
        test-elixir test-db check-elixir-newer demo bench bench-db bench-retrain clean

# The public targets run the set-up first, then a fresh make that sees the virtualenv and the
# Erlang headers it may just have installed (the variables above are read when make starts).
all: setup
	@$(MAKE) --no-print-directory build
test: setup
	@$(MAKE) --no-print-directory test-all
demo: setup
	@$(MAKE) --no-print-directory build
	bash scripts/demo.sh priv/uro_recommender $(PYTHON)
bench: setup
	@$(MAKE) --no-print-directory build
	escript bench/bench.escript priv/uro_recommender priv/echo_port $(PYTHON)
	PYTHONPATH=$(TESTPATH) escript bench/db_bench.escript priv/uro_recommender $(PYTHON)
	PYTHONPATH=$(TESTPATH) $(PYTHON) bench/retrain_bench.py --out bench/RETRAIN_BENCH.txt
bench-retrain: setup
	PYTHONPATH=$(TESTPATH) $(PYTHON) bench/retrain_bench.py --out bench/RETRAIN_BENCH.txt
bench-db: setup
	@$(MAKE) --no-print-directory build
	PYTHONPATH=$(TESTPATH) escript bench/db_bench.escript priv/uro_recommender $(PYTHON)

setup:
	@bash scripts/setup.sh >/dev/null

build: priv/uro_recommender priv/echo_port

priv/uro_recommender: $(PORT_SRC) $(HDRS) Makefile
	@mkdir -p priv
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $(PORT_SRC) $(LDLIBS_PY) $(LDLIBS_EI) $(LDLIBS_PQ)

priv/echo_port: c_src/echo_port.c c_src/erlcmd.c c_src/erlcmd.h Makefile
	@mkdir -p priv
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ c_src/echo_port.c c_src/erlcmd.c $(LDLIBS_EI)

# ---- tests ----------------------------------------------------------------------------------
UNIT_SRC := c_src/erlcmd.c c_src/term.c c_src/copytext.c
TESTS    := test_erlcmd test_term test_copytext
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

_build/%: test/c/%.c $(UNIT_SRC) $(HDRS)
	@mkdir -p _build
	$(CC) $(CPPFLAGS) -Ic_src -O1 -g $(WARN) -o $@ $< $(UNIT_SRC) $(LDLIBS_PY) $(LDLIBS_EI) -lcmocka

_build/san/%: test/c/%.c $(UNIT_SRC) $(HDRS)
	@mkdir -p _build/san
	$(CC) $(CPPFLAGS) -Ic_src -O1 -g $(SAN) $(WARN) -o $@ $< $(UNIT_SRC) $(LDLIBS_PY) $(LDLIBS_EI) -lcmocka

test-c: $(addprefix _build/,$(TESTS))
	@for t in $^; do echo "== $$t"; PYTHONHOME= ./$$t || exit 1; done

# Python's own allocations are not ours to police here: leaks are checked on our code paths
# by the unit tests' explicit reference counting, so LeakSanitizer is told to stay quiet.
test-sanitize: $(addprefix _build/san/,$(TESTS))
	@for t in $^; do echo "== $$t (ASan+UBSan)"; \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 ./$$t || exit 1; done

test-python:
	cd python && PYTHONPATH=$(TESTPATH) $(PYTHON) -m pytest -q tests

test-replay: build
	escript test/replay/replay.escript priv/uro_recommender test/replay/*.session

test-matrix: build
	escript test/matrix.escript priv/uro_recommender

test-elixir: build
	cd elixir_stub && URO_REC_PORT=$(TOP)/priv/uro_recommender mix test

# elixir_stub on a newer Elixir (1.18 in a Debian trixie chroot); not part of `make test`.
check-elixir-newer:
	bash scripts/elixir_newer.sh

# Against the PostgreSQL server on 127.0.0.1:5432 (.ci/run starts it when it is down).
test-db: build
	escript test/db_test.escript priv/uro_recommender

test-all: build test-c test-sanitize test-python test-replay test-db test-matrix test-elixir
	@echo "make test: all suites passed"

clean:
	rm -rf _build priv/uro_recommender priv/echo_port
