"""apply_schema: the port's tables (interactions, recommendations, the model registry),
created from the SQL files in priv/sql/."""
import os

from . import db
from .errors import BadArg

SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "priv", "sql")


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
