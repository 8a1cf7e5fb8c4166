"""Data sources -> pandas DataFrame with columns ``user, item, label[, time]``.

A source is ``{rows, [{User, Item, Label} | {User, Item, Label, Time}, ...]}``,
``{csv, Path}`` (header ``user,item,label[,time]``) or ``{sql, Query, Params}`` (the
first columns user, item, label[, time], streamed through the port's C database
functions, see :mod:`uro_rec.db`). The tag may be an atom or a binary. Every source holds at
most ``max_rows`` rows (:mod:`uro_rec.limits`): a CSV file is read by
:mod:`uro_rec.csv_reader`, an SQL query bounded by :mod:`uro_rec.sql_text`.

Ids keep their type end to end: a model trained on integer ids answers with
Python ints, one trained on strings with str. The frame therefore uses an int64
column when every id fits, and an ``object`` column of Python ints when one does
not (pandas would otherwise turn bignums into floats and lose digits). Mixing
integer and string ids in one column is refused: libreco sorts the unique ids,
which fails on mixed types, and the caller almost surely has a bug.
"""
import numpy as np

from . import csv_reader, db, ids, limits, sql_text
from .errors import BadArg
from .options import check_id, finite_float

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def id_kind(values):
    """'int' or 'str' for a homogeneous iterable of ids (empty -> 'int')."""
    has_int = has_str = False
    for v in values:
        if isinstance(v, str):
            has_str = True
        else:
            has_int = True
        if has_int and has_str:
            return "mixed"
    return "str" if has_str else "int"


def id_column(values, where, field):
    """Build a column that keeps id values exact (see module doc)."""
    kind = id_kind(values)
    if kind == "mixed":
        raise BadArg(
            f"{where}: {field} ids mix integers and strings; use one type per column"
        )
    if kind == "int" and all(_I64_MIN <= v <= _I64_MAX for v in values):
        return np.asarray(values, dtype=np.int64)
    arr = np.empty(len(values), dtype=object)
    arr[:] = [str(v) if kind == "str" else int(v) for v in values]
    return arr


def _tag(source, where):
    if not isinstance(source, tuple) or len(source) not in (2, 3) or not isinstance(source[0], str):
        raise BadArg(
            f"{where}: data source must be {{rows, [{{User, Item, Label}}...]}}, "
            f"{{csv, Path}} or {{sql, Query, Params}}, got {_short(source)}"
        )
    return str(source[0])


def _short(x, limit=200):
    s = repr(x)
    return s if len(s) <= limit else s[:limit] + "..."


def from_rows(rows, where="data"):
    if not isinstance(rows, (list, tuple)):
        raise BadArg(f"{where}: rows must be a list of tuples, got {_short(rows)}")
    if not rows:
        raise BadArg(f"{where}: rows is empty")
    if len(rows) > limits.get("max_rows"):
        raise BadArg(f"{where}: more than {limits.get('max_rows')} rows (the limit is "
                     f"{limits.hint('max_rows')})")
    users, items, labels, times = [], [], [], []
    width = None
    for i, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) not in (3, 4):
            raise BadArg(
                f"{where}: row {i} must be {{User, Item, Label}} or "
                f"{{User, Item, Label, Time}}, got {_short(row)}"
            )
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise BadArg(f"{where}: row {i} has {len(row)} fields, earlier rows {width}")
        users.append(check_id(row[0], where, f"row {i} user"))
        items.append(check_id(row[1], where, f"row {i} item"))
        labels.append(finite_float(row[2], where, f"row {i} label"))
        if width == 4:
            times.append(finite_float(row[3], where, f"row {i} time"))
    return _frame(users, items, labels, times if width == 4 else None, where)


def _frame(users, items, labels, times, where):
    import pandas as pd  # (here: a serving port never needs pandas, ~25 MB a process)
    cols = {
        "user": id_column(users, where, "user"),
        "item": id_column(items, where, "item"),
        "label": np.asarray(labels, dtype=np.float32),
    }
    if times is not None:
        cols["time"] = np.asarray(times, dtype=np.float64)
    return pd.DataFrame(cols)


def from_csv(path, where="data"):
    """``{csv, Path}``: read by :mod:`uro_rec.csv_reader` (bounded, confined to the data
    directory, errors that never quote the file)."""
    users, items, labels, times = csv_reader.read(path, where)
    return _frame(users, items, labels, times, where)


def _sql_params(params, where):
    if not isinstance(params, list):
        raise BadArg(f"{where}: SQL params must be a list, got {params!r}")
    for i, p in enumerate(params):
        if p is not None and not isinstance(p, (str, bytes, int, float, bool)):
            raise BadArg(f"{where}: SQL param ${i + 1} must be a binary, integer, float, "
                         f"boolean or nil, got {p!r}")
    return params


def _sql_column(kind, data, rows):
    if kind in ("text", "text_array", "unsupported"):
        return data  # a list of (interned) str, of lists of str; the type OID
    dtype = np.int64 if kind in ("int64", "time") else np.float64
    return np.frombuffer(data, dtype=dtype, count=rows)


def sql_columns(query, params, where="data"):
    """``{sql, Query, Params}`` -> ``(names, [(kind, values, nulls, first_null)], rows)``, every
    column of the result: int64, float64 (booleans 0/1) and time as numpy arrays, text and
    text_array (TEXT[], UUID[]... as lists of str) as lists, unsupported with its type OID.
    from_sql reads the first columns as interactions; uro_rec.features reads them by name."""
    if not isinstance(query, str) or not query.strip():
        raise BadArg(f"{where}: SQL query must be a non-empty binary")
    params = _sql_params(params, where)
    max_rows = limits.get("max_rows")
    result = db.columns(sql_text.row_capped(query, max_rows), params)
    rows = result["rows"]
    if rows > max_rows:
        raise BadArg(f"{where}: the query returned more than {max_rows} rows (the limit is "
                     f"{limits.hint('max_rows')}); nothing was loaded")
    return result["names"], [(kind, _sql_column(kind, values, rows), nulls, first)
                             for kind, values, nulls, first in result["columns"]], rows


def from_sql(query, params, where="data"):
    """``{sql, Query, Params}`` -> DataFrame ``user, item, label[, time]``.

    The first columns are user, item, label and optionally time, in that order. Numeric
    columns arrive as one buffer each (no Python object per row)."""
    import pandas as pd  # (here: a serving port never needs pandas, ~25 MB a process)
    names, cols, rows = sql_columns(query, params, where)
    if len(cols) < 3:
        raise BadArg(f"{where}: the query must return user, item, label[, time] columns, "
                     f"got {names}")
    fields = ["user", "item", "label", "time"][:min(len(cols), 4)]
    if rows == 0:
        raise BadArg(f"{where}: the query returned no rows")
    data = {}
    for field, name, (kind, values, nulls, first_null) in zip(fields, names, cols):
        if nulls:
            raise BadArg(f"{where}: column {name} ({field}) is NULL in {nulls} rows, first at "
                         f"row {first_null + 1}; nothing was loaded")
        if kind == "unsupported":
            raise BadArg(f"{where}: column {name} ({field}) has a type (oid {values}) that "
                         f"cannot be an id, a label or a time: cast it in the query")
        if field == "label" and kind in ("text", "text_array"):
            raise BadArg(f"{where}: column {name} (label) must be numeric")
        if field == "time" and kind == "text_array":
            raise BadArg(f"{where}: column {name} (time) must be a timestamp or a number")
        if field in ("user", "item") and kind in ("float64", "time", "text_array"):
            raise BadArg(f"{where}: column {name} ({field}) must be an integer or text id")
        if field in ("user", "item") and kind == "text":
            values = ids.from_texts(values)  # \x-hex text is a binary id (uro_rec.ids)
        data[field] = values
    return pd.DataFrame(data)


def load(source, where="data"):
    """Any source -> DataFrame (user, item, label[, time])."""
    tag = _tag(source, where)
    if tag in ("rows", "csv") and len(source) != 2:
        raise BadArg(f"{where}: a {tag} source is a 2-tuple {{{tag}, ...}}")
    if tag == "rows":
        return from_rows(source[1], where)
    if tag == "csv":
        return from_csv(source[1], where)
    if tag == "sql":
        if len(source) != 3:
            raise BadArg(f"{where}: an SQL source is {{sql, Query, Params}}")
        return from_sql(source[1], source[2], where)
    raise BadArg(f"{where}: unknown data source type {tag!r}; expected rows, csv or sql")


def training_frame(df):
    """Order by time when given (sequence models read each user's consumed
    items in order) and keep only the columns DatasetPure wants."""
    if "time" in df.columns:
        df = df.sort_values("time", kind="stable")
    return df[["user", "item", "label"]].reset_index(drop=True)
