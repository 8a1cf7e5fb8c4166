"""User and item features for LibRecommender's feature models (``DatasetFeat``): the training
spec, reading feature values from any source, and turning request options into the feature
dicts LibRecommender's ``recommend_user(user_feats=...)`` / ``predict(feats=...)`` take.

The spec (``train``'s ``features``)::

    #{user  => #{Column => sparse | dense | multi_sparse},
      item  => #{Column => sparse | dense | multi_sparse},
      users => Source,    % optional: first column the user id, then named feature columns
      items => Source}    % optional: first column the item id, then named feature columns

A declared column's values come from the ``users`` / ``items`` source when it has that column,
else from the interaction source's column of that name (``{rows, [{U, I, L[, T], #{Col => V}}]}``,
a CSV header ``user,item,label[,time],Col...``, or an SQL column named ``Col`` after user, item,
label). Values, by kind:

- ``sparse``: a category. Strings, integers, booleans and integral floats are compared by
  their canonical text (``true`` and ``1`` and SQL's boolean true are one category, ``"1"``);
  an id the feature source has no row for, or NULL, is the category ``missing``.
- ``dense``: a number; absent or NULL values take the column's mean over the training rows.
- ``multi_sparse``: a list of categories (SQL ``text[]``, a list in rows, ``a|b|c`` in CSV),
  laid out as LibRecommender wants it: ``Col[1]..Col[K]`` columns, K the longest list at
  training (at most :data:`MAX_TAGS`; longer lists keep their first K), padded with ``missing``.

What is stored with a version (``layout``, in uro_meta.json) is the column kinds, each
multi-sparse column's K and each dense column's fill value: what serving needs to turn
``user_feats => #{Col => V}`` back into LibRecommender's columns.
"""
import csv
import math
import os

import numpy as np

from . import sources
from .errors import BadArg, Unsupported
from .options import check_id, normalize_opts

KINDS = ("sparse", "dense", "multi_sparse")
PAD = "missing"   # libreco's default pad_val; also an absent sparse value
MAX_TAGS = 16
#: libreco.utils.constants.FeatModels without the DGL variants: the classes whose
#: constructors read DatasetFeat's columns.
FEATURE_MODELS = ("WideDeep", "FM", "DeepFM", "YouTubeRetrieval", "YouTubeRanking", "AutoInt",
                  "DIN", "GraphSage", "PinSage", "TwoTower", "Transformer", "SIM")


# ---- the spec --------------------------------------------------------------------------------

def parse_spec(value, algorithm, where):
    """train's ``features`` -> {"user": {col: kind}, "item": {...}, "users": src, "items": src}."""
    if algorithm not in FEATURE_MODELS:
        raise BadArg(f"{where}: {algorithm} takes no features; the feature models are "
                     f"{', '.join(FEATURE_MODELS)}")
    o = normalize_opts(value, f"{where}: features")
    unknown = sorted(set(o) - {"user", "item", "users", "items"})
    if unknown:
        raise BadArg(f"{where}: features: unknown key(s) {', '.join(unknown)}; "
                     f"allowed: user, item, users, items")
    spec = {"users": o.get("users"), "items": o.get("items")}
    for side in ("user", "item"):
        cols = normalize_opts(o.get(side), f"{where}: features {side}")
        spec[side] = {}
        for col, kind in cols.items():
            if not isinstance(kind, str) or str(kind) not in KINDS:
                raise BadArg(f"{where}: features {side} column {col} must be sparse, dense or "
                             f"multi_sparse, got {kind!r}")
            spec[side][str(col)] = str(kind)
    clash = set(spec["user"]) & set(spec["item"])
    if clash or not (spec["user"] or spec["item"]):
        raise BadArg(f"{where}: features need user and/or item columns, each named once"
                     + (f"; both sides name {', '.join(sorted(clash))}" if clash else ""))
    return spec


def libreco_columns(layout):
    """DatasetFeat.build_trainset's column arguments for a stored layout."""
    def side(s):
        part = layout[s]
        return part["sparse"] + part["dense"] + [c for m in part["multi_sparse"]
                                                  for c in expanded(m, part["multi_sparse"][m])]
    multi = [expanded(m, k) for s in ("user", "item") for m, k in layout[s]["multi_sparse"].items()]
    return {
        "user_col": side("user"), "item_col": side("item"),
        "sparse_col": layout["user"]["sparse"] + layout["item"]["sparse"],
        "dense_col": layout["user"]["dense"] + layout["item"]["dense"],
        "multi_sparse_col": multi, "pad_val": PAD,
    }


def expanded(col, k):
    return [f"{col}[{j}]" for j in range(1, k + 1)]


# ---- values ------------------------------------------------------------------------------

def canonical(value, where, col):
    """A sparse feature value as the text it is compared by."""
    if value is None:
        return PAD
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadArg(f"{where}: feature {col} has the non-finite value {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return str(value)
    raise BadArg(f"{where}: feature {col} must be a string, number or boolean, got {value!r}")


def dense_value(value, where, col):
    if value is None:
        return math.nan  # filled with the column's mean
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        if math.isfinite(v) or math.isnan(v):
            return v
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else math.nan
        except ValueError:
            pass
    raise BadArg(f"{where}: dense feature {col} must be a number, got {value!r}")


def tag_list(value, where, col):
    if value is None:
        return []
    if isinstance(value, str):  # CSV: a|b|c
        return [t for t in str(value).split("|") if t]
    if isinstance(value, (list, tuple)):
        return [canonical(v, where, col) for v in value if v is not None]
    raise BadArg(f"{where}: multi_sparse feature {col} must be a list, got {value!r}")


# ---- reading sources -----------------------------------------------------------------------

def _csv_id(text):
    """The same rule as sources' CSV ids: an integer when written canonically, else text."""
    t = text.strip()
    if t.isascii() and t.lstrip("-").isdigit() and str(int(t)) == t:
        return int(t)
    return t


def read_table(source, where):
    """Any source -> (names, columns): every column by name, values as Python objects (or
    numpy arrays from SQL), CSV fields as strings. Rows sources are ``[{Id, #{Col => V}}]``."""
    tag = source[0] if isinstance(source, tuple) and source and isinstance(source[0], str) else None
    if tag == "rows" and len(source) == 2:
        return _rows_table(source[1], where)
    if tag == "csv" and len(source) == 2:
        return _csv_table(source[1], where)
    if tag == "sql" and len(source) == 3:
        return _sql_table(source[1], source[2], where)
    raise BadArg(f"{where}: a feature source is {{rows, [{{Id, #{{Column => Value}}}}]}}, "
                 f"{{csv, Path}} or {{sql, Query, Params}}, got {str(source)[:200]}")


def _rows_table(rows, where):
    if not isinstance(rows, (list, tuple)) or not rows:
        raise BadArg(f"{where}: feature rows must be a non-empty list of {{Id, #{{Column => Value}}}}")
    ids, maps = [], []
    for k, row in enumerate(rows):
        if not (isinstance(row, tuple) and len(row) == 2 and isinstance(row[1], dict)):
            raise BadArg(f"{where}: feature row {k} must be {{Id, #{{Column => Value}}}}, got {row!r}")
        ids.append(check_id(row[0], where, f"row {k} id"))
        maps.append({str(c): v for c, v in row[1].items()})
    names = sorted({c for m in maps for c in m})
    return ["id"] + names, [ids] + [[m.get(c) for m in maps] for c in names]


def _csv_table(path, where):
    if isinstance(path, bytes) or not isinstance(path, str) or not os.path.isfile(path):
        raise BadArg(f"{where}: csv file {path!r} does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            names = [h.strip() for h in next(reader, [])]
            rows = [r for r in reader if r and not (len(r) == 1 and not r[0].strip())]
    except (UnicodeDecodeError, csv.Error, OSError) as e:
        raise BadArg(f"{where}: csv {path} cannot be read: {e}") from None
    if not names or not rows:
        raise BadArg(f"{where}: csv {path} needs a header and at least one row")
    for lineno, r in enumerate(rows, start=2):
        if len(r) != len(names):
            raise BadArg(f"{where}: csv {path} line {lineno} has {len(r)} fields, the header {len(names)}")
    cols = [[v if v.strip() else None for v in c] for c in zip(*rows)]  # empty = absent
    return names, cols


def _sql_table(query, params, where):
    names, cols, rows = sources.sql_columns(query, params, where)
    if not rows:
        raise BadArg(f"{where}: the query returned no rows")
    out = []
    for name, (kind, values, nulls, _first) in zip(names, cols):
        if kind == "unsupported":
            raise BadArg(f"{where}: column {name} has a type (oid {values}) no feature can "
                         f"have: cast it in the query (text, numbers, booleans, text[])")
        if kind in ("text", "text_array"):
            out.append(list(values))
        elif nulls and kind != "float64":  # an integer NULL arrives as 0: indistinguishable
            raise BadArg(f"{where}: column {name} is NULL in {nulls} rows; an integer column "
                         f"cannot mark them: COALESCE it or cast it to FLOAT8 (NULL = absent)")
        else:  # a float NULL arrives as NaN: absent
            out.append([None if math.isnan(v) else v for v in values.tolist()]
                       if nulls else values.tolist())
    return list(names), out


# ---- the training frame -------------------------------------------------------------------

def training_frame(source, spec, where, like=None):
    """The interactions with every declared feature column, ordered by time when given (the
    sequence models read consumption in order) -> (DataFrame, layout). ``like``: a saved
    layout whose multi_sparse widths and dense fill values to keep (a retrain's new data must
    have the saved version's columns)."""
    import pandas as pd  # (here: a serving port never needs pandas, ~25 MB a process)
    declared = {c for side in ("user", "item") for c in spec[side]}
    base, inline = _interactions(source, declared, where)
    values = {}
    for side, table_source in (("user", spec["users"]), ("item", spec["items"])):
        table = _keyed(table_source, where) if table_source is not None else {}
        ids = base[side].tolist()
        for col in spec[side]:
            if col in table:
                values[col] = [table[col].get(i) for i in ids]
            elif col in inline:
                values[col] = inline[col]
            else:
                raise BadArg(f"{where}: feature {col} is a column of no source (the "
                             f"{side}s source or the interaction source)")
    layout, columns = _convert(spec, values, where, like)
    df = pd.concat([base, pd.DataFrame(columns, index=base.index)], axis=1)
    if "time" in df.columns:
        df = df.sort_values("time", kind="stable").drop(columns="time")
    return df.reset_index(drop=True), layout


def _keyed(source, where):
    """A feature source -> {column: {id: value}} (a later row for the same id wins)."""
    names, cols = read_table(source, where)
    from_csv = source[0] == "csv"
    ids = [_csv_id(v) if from_csv and isinstance(v, str) else check_id(v, where, "feature id")
           for v in cols[0]]
    return {n: dict(zip(ids, c)) for n, c in zip(names[1:], cols[1:])}


def _interactions(source, declared, where):
    """-> (DataFrame user, item, label[, time]; {feature column: values in row order})."""
    tag = source[0] if isinstance(source, tuple) and source and isinstance(source[0], str) else None
    if tag == "rows" and len(source) == 2 and isinstance(source[1], (list, tuple)):
        rows = source[1]
        if not any(isinstance(r, tuple) and r and isinstance(r[-1], dict) for r in rows):
            return sources.load(source, where), {}
        maps = [r[-1] if isinstance(r, tuple) and r and isinstance(r[-1], dict) else {} for r in rows]
        base = sources.from_rows([r[:-1] if isinstance(r, tuple) and r and isinstance(r[-1], dict)
                                  else r for r in rows], where)
        return base, {c: [m.get(c) for m in maps] for c in declared}
    if tag not in ("csv", "sql"):
        return sources.load(source, where), {}
    names, cols = read_table(source, where)
    rest = [(n, c) for n, c in zip(names, cols) if n not in declared]
    if len(rest) not in (3, 4):
        raise BadArg(f"{where}: besides feature columns the data must have user, item, label"
                     f"[, time] columns, got {', '.join(n for n, _ in rest)}")
    base = _base_frame([c for _, c in rest], tag == "csv", where)
    return base, {n: c for n, c in zip(names, cols) if n in declared}


def _base_frame(cols, from_csv, where):
    import pandas as pd  # (here: a serving port never needs pandas, ~25 MB a process)
    def ids(vals, field):
        return sources.id_column([_csv_id(v) if from_csv and isinstance(v, str)
                                  else check_id(v, where, field) for v in vals], where, field)

    def numbers(vals, field):
        try:
            return np.asarray([float(v) for v in vals], dtype=np.float64)
        except (TypeError, ValueError):
            raise BadArg(f"{where}: the {field} column must hold numbers") from None

    frame = {"user": ids(cols[0], "user"), "item": ids(cols[1], "item"),
             "label": numbers(cols[2], "label").astype(np.float32)}
    if len(cols) == 4:
        frame["time"] = numbers(cols[3], "time")
    return pd.DataFrame(frame)


def _convert(spec, values, where, like=None):
    """Declared raw values -> (layout, {libreco column: values}), columns sorted by name."""
    layout = {"user": {"sparse": [], "dense": [], "multi_sparse": {}},
              "item": {"sparse": [], "dense": [], "multi_sparse": {}}, "dense_fill": {}}
    out = {}
    for side in ("user", "item"):
        for col in sorted(spec[side]):
            kind, raw = spec[side][col], values[col]
            if kind == "sparse":
                layout[side]["sparse"].append(col)
                out[col] = [canonical(v, where, col) for v in raw]
            elif kind == "dense":
                vals = np.asarray([dense_value(v, where, col) for v in raw], dtype=np.float64)
                fill = (like["dense_fill"][col] if like is not None
                        else float(np.nanmean(vals)) if np.isfinite(vals).any() else 0.0)
                vals[np.isnan(vals)] = fill
                layout[side]["dense"].append(col)
                layout["dense_fill"][col] = fill
                out[col] = vals.astype(np.float32)
            else:
                lists = [tag_list(v, where, col) for v in raw]
                k = (like[side]["multi_sparse"][col] if like is not None
                     else max(1, min(MAX_TAGS, max(map(len, lists), default=1))))
                layout[side]["multi_sparse"][col] = k
                out.update(_spread(col, k, lists))
    return layout, out


def _spread(col, k, lists):
    names = expanded(col, k)
    return {n: [tags[j] if j < len(tags) else PAD for tags in lists] for j, n in enumerate(names)}


# ---- serving --------------------------------------------------------------------------------

def request_feats(layout, side, value, where, field):
    """``user_feats`` / ``item_feats`` (#{Column => Value}) -> libreco's feature dict."""
    part = layout[side]
    o = normalize_opts(value, f"{where}: {field}")
    out = {}
    for col, v in o.items():
        if col in part["sparse"]:
            out[col] = canonical(v, where, col)
        elif col in part["dense"]:
            d = dense_value(v, where, col)
            out[col] = layout["dense_fill"][col] if math.isnan(d) else d
        elif col in part["multi_sparse"]:
            k = part["multi_sparse"][col]
            out.update({n: vals[0] for n, vals in _spread(col, k, [tag_list(v, where, col)]).items()})
        else:
            known = part["sparse"] + part["dense"] + list(part["multi_sparse"])
            raise BadArg(f"{where}: {field}: {col} is not one of the model's {side} features"
                         f" ({', '.join(known) or 'none'})")
    return out


def assignment_frame(layout, side, source, where):
    """A feature source -> the DataFrame DataInfo.assign_{user,item}_features takes: the id
    column and the source's columns the model knows, converted as at training."""
    import pandas as pd  # (here: a serving port never needs pandas, ~25 MB a process)
    names, cols = read_table(source, where)
    from_csv = source[0] == "csv"
    ids = [_csv_id(v) if from_csv and isinstance(v, str) else check_id(v, where, f"{side} id")
           for v in cols[0]]
    part = layout[side]
    frame = {side: sources.id_column(ids, where, side)}
    for name, raw in zip(names[1:], cols[1:]):
        if name in part["sparse"]:
            frame[name] = [canonical(v, where, name) for v in raw]
        elif name in part["dense"]:
            vals = np.asarray([dense_value(v, where, name) for v in raw], dtype=np.float64)
            vals[np.isnan(vals)] = layout["dense_fill"][name]
            frame[name] = vals.astype(np.float32)
        elif name in part["multi_sparse"]:
            lists = [tag_list(v, where, name) for v in raw]
            frame.update(_spread(name, part["multi_sparse"][name], lists))
        else:
            raise BadArg(f"{where}: {name} is not one of the model's {side} features")
    return pd.DataFrame(frame)



# ---- request options and update_features ---------------------------------------------------

#: Feature models whose users LibRecommender can build from features at request time: the
#: TensorFlow scoring networks (recommend_user / predict take them) and the two dynamic
#: embedding models. PinSage and GraphSage use features in training only.
NO_REQUEST_FEATURES = ("PinSage", "GraphSage")


def user_feats_option(entry, value, where):
    """recommend/predict's ``user_feats`` -> libreco's dict, after checking the model can
    use them."""
    _servable(entry, where, "user_feats")
    if where not in ("recommend", "predict"):
        raise BadArg(f"{where}: user_feats describe one user: use recommend")
    if not _columns_of(entry.features, "user"):
        raise BadArg(f"{where}: {entry.name} was trained without user features")
    return request_feats(entry.features, "user", value, where, "user_feats")


def item_feats_option(entry, value, where):
    """predict's ``item_feats`` (the features of the items asked about, typically one item
    the model never saw) -> libreco's dict."""
    _servable(entry, where, "item_feats")
    if entry.kind != "other":
        raise BadArg(f"{where}: {entry.algorithm} scores items by their trained embeddings; "
                     f"item_feats are for the scoring networks (FM, WideDeep, DeepFM, ...)")
    if not _columns_of(entry.features, "item"):
        raise BadArg(f"{where}: {entry.name} was trained without item features")
    return request_feats(entry.features, "item", value, where, "item_feats")


def _servable(entry, where, field):
    if entry.features is None:
        raise BadArg(f"{where}: {field} need a model trained with features; {entry.name} "
                     f"({entry.algorithm}) has none")
    if entry.algorithm in NO_REQUEST_FEATURES:
        raise BadArg(f"{where}: {entry.algorithm} uses its features in training only "
                     f"(LibRecommender builds no {entry.algorithm} user at request time)")


def _columns_of(layout, side):
    part = layout[side]
    return part["sparse"] + part["dense"] + list(part["multi_sparse"])


def update(entry, what, where):
    """``{update_features, Name, #{users | items => Source}}``: the stored features of the
    ids the sources name (known ids only, columns the model has) are replaced, through
    DataInfo.assign_{user,item}_features. -> {users|items: ids matched}."""
    if entry.features is None:
        raise BadArg(f"{where}: {entry.name} ({entry.algorithm}) was trained without features")
    if entry.algorithm in NO_REQUEST_FEATURES and not entry.trained_here:
        raise Unsupported(f"{where}: a loaded {entry.algorithm} keeps no network to compute "
                          f"its vectors again from new features (LibRecommender saves only "
                          f"the vectors): retrain it (train with from_version) instead")
    o = normalize_opts(what, f"{where}: sources")
    if not o or set(o) - {"users", "items"}:
        raise BadArg(f"{where}: give users => Source and/or items => Source, got {sorted(o)}")
    counts = {}
    for key, side in (("users", "user"), ("items", "item")):
        if key not in o:
            continue
        frame = assignment_frame(entry.features, side, o[key], where)
        index = entry.user_index if side == "user" else entry.item_index
        counts[key] = sum(1 for i in frame[side].tolist() if i in index)
        info = entry.data_info
        assign = info.assign_user_features if side == "user" else info.assign_item_features
        assign(frame)
        _keep_for_save(info)
    return counts


def _keep_for_save(info):
    """DataInfo.save writes the arrays its constructor was given (``all_args``), not the ones
    assign_*_features replaced: without this a saved version would lose the update. The
    constructor appends the out-of-vocabulary row itself, so it is left off here."""
    for key in ("user_sparse_unique", "user_dense_unique", "item_sparse_unique",
                "item_dense_unique"):
        current = getattr(info, key)
        if current is not None and key in info.all_args:
            info.all_args[key] = current[:-1]
