"""apply_schema: the port's tables (interactions, recommendations, the model registry),
created from the SQL files (priv/sql/ in the checkout; see SCHEMA_DIR)."""
import os

from . import db
from .errors import BadArg

# apply_schema's default: <python dir>/../sql in an installed tree or a Mix host's priv/ (python/
# and sql/ are siblings there), else <python dir>/../priv/sql in the checkout. The port's
# c_src/paths.c has the same rule, and --check compares the two.
_PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_DIR = next((d for d in (os.path.join(_PYTHON_DIR, "..", "sql"),
                               os.path.join(_PYTHON_DIR, "..", "priv", "sql")) if os.path.isdir(d)),
                  os.path.join(_PYTHON_DIR, "..", "priv", "sql"))


def apply_schema(directory=None):
    """Runs priv/sql/*.sql in order, one statement at a time (CockroachDB wants DDL outside
    explicit transactions)."""
    directory = os.path.abspath(directory or SCHEMA_DIR)
    if not os.path.isdir(directory):
        raise BadArg(f"apply_schema: {directory} is not a directory")
    applied = []
    for fname in sorted(f for f in os.listdir(directory) if f.endswith(".sql")):
        with open(os.path.join(directory, fname)) as f:
            text = "\n".join(l for l in f.read().splitlines() if not l.lstrip().startswith("--"))
        for stmt in (s.strip() for s in text.split(";")):
            if stmt:
                db.execute(stmt)
        applied.append(fname)
    return applied
