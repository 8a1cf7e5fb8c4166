"""The bounds on what one call can make the port hold, and the data directory.

One table, each row with the environment variable that changes it, its default and what it
bounds (docs/OPERATIONS.md, "Bounds and timeouts", shows the same rows with the other
bounds of the port). The port's flags ``--max-rows``, ``--csv-max-line`` and ``--data-dir``
set the same variables before Python starts (c_src/main.c), so a flag and its variable are
one setting, the flag winning. Read on every use (a dict lookup), so tests can change them.

Why these and not others: every input that can grow is either streamed in bounded pieces
(``export`` with ``users => all`` computes and writes batches of ``batch_size`` rows; a SQL
source streams row by row into typed columns) or bounded here; request frames themselves
are bounded by ``--max-frame`` in C before any of this runs.
"""
import os

from .errors import PortError

#: name -> (environment variable, default, what it bounds). Explicit, not generated, so the
#: documentation table can be checked against it line by line.
BOUNDS = {
    "max_rows": ("URO_REC_MAX_ROWS", 20_000_000,
                 "rows of one training or evaluation source ({rows, ...}, {csv, ...}, "
                 "{sql, ...})"),
    "csv_max_line": ("URO_REC_CSV_MAX_LINE", 65_536,
                     "bytes of one line of a {csv, Path} file, its line break included"),
    "max_list": ("URO_REC_MAX_LIST", 100_000,
                 "elements of one list argument: observe events, recommend_many users, "
                 "predict items, exclude, export users"),
    "max_reply_items": ("URO_REC_MAX_REPLY_ITEMS", 1_000_000,
                        "ids in one recommend_many reply (users x min(N, the model's "
                        "items)), rows in one export batch"),
}

DATA_DIR_ENV = "URO_REC_DATA_DIR"


def get(name):
    """The bound ``name`` of :data:`BOUNDS`: its variable when set, else its default. A
    variable that is not a positive integer is an error naming it (an operator's setting is
    never second-guessed), answered as ``internal``."""
    env, default, _what = BOUNDS[name]
    text = os.environ.get(env, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise PortError(f"{env}={text[:40]!r} is not a positive integer", kind="internal")
    return value


def hint(name):
    """How to change a bound, for error messages: ``URO_REC_MAX_LIST`` (or its flag)."""
    env = BOUNDS[name][0]
    flag = {"max_rows": "--max-rows", "csv_max_line": "--csv-max-line"}.get(name)
    return f"{flag} or {env}" if flag else env


def data_dir():
    """The directory ``{csv, Path}`` is confined to (``--data-dir`` / URO_REC_DATA_DIR,
    resolved by c_src/paths.c), or None: any file the port can read."""
    return os.environ.get(DATA_DIR_ENV) or None
