"""Argument normalisation and validation shared by all commands.

Erlang callers send options either as a map or as a proplist (``[{k, v}, flag]``),
keys as atoms or binaries. Everything is turned into a plain ``dict[str, Any]``
here, and every check raises :class:`BadArg` with a message naming the command
and the field, so no malformed value ever reaches libreco (whose own errors are
assertions and TypeErrors deep in the stack).
"""
import math
import re

from . import ids, limits
from .errors import BadArg

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def _key(k, where):
    if isinstance(k, str):  # includes Atom
        return str(k)
    if isinstance(k, bytes):
        raise BadArg(f"{where}: option keys must be atoms or UTF-8 strings, got {k!r}")
    raise BadArg(f"{where}: option keys must be atoms or strings, got {k!r}")


def normalize_opts(opts, where="options"):
    """Map or proplist -> ``dict`` with plain ``str`` keys.

    ``None`` (nil/undefined) and ``[]`` mean no options. A bare atom in a
    proplist means ``True`` (``[scores]`` == ``[{scores, true}]``); later
    entries win, like ``maps:from_list``.
    """
    if opts is None:
        return {}
    if isinstance(opts, dict):
        return {_key(k, where): v for k, v in opts.items()}
    if isinstance(opts, (list, tuple)):
        out = {}
        for el in opts:
            if isinstance(el, tuple) and len(el) == 2:
                out[_key(el[0], where)] = el[1]
            elif isinstance(el, str):
                out[str(el)] = True
            else:
                raise BadArg(
                    f"{where}: must be a map or a proplist of {{Key, Value}} tuples "
                    f"and atoms, got element {el!r}"
                )
        return out
    raise BadArg(f"{where}: must be a map or a proplist, got {opts!r}")


def check_known(opts, allowed, where):
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise BadArg(
            f"{where}: unknown option(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def model_name(name, where):
    """Model names arrive as binary (str) or atom; stored as plain str.

    They become directory names, so only a safe character set is accepted.
    """
    if isinstance(name, bytes) or not isinstance(name, str):
        raise BadArg(f"{where}: model name must be an atom or a string, got {name!r}")
    name = str(name)
    if not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise BadArg(
            f"{where}: model name must be 1-128 characters of letters, digits, "
            f"'_', '-', '.', not starting with '.' or '-', got {name!r}"
        )
    return name


def check_id(value, where, field):
    """User and item ids are integers (any size) or binaries of any bytes (a binary that is
    not UTF-8 becomes an escaped str: :mod:`uro_rec.ids`).

    Atoms are accepted as strings. bool is rejected although it is an int
    subclass, because ``true`` as an id is almost certainly a caller bug.
    """
    if isinstance(value, bool) or value is None:
        raise BadArg(f"{where}: {field} must be an integer or a string, got {value!r}")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return ids.from_term(value)
    raise BadArg(f"{where}: {field} must be an integer or a string, got {value!r}")


def check_id_list(values, where, field):
    if not isinstance(values, (list, tuple)):
        raise BadArg(f"{where}: {field} must be a list of ids, got {values!r}")
    check_length(values, where, field)
    return [check_id(v, where, f"{field} element") for v in values]


def check_length(values, where, field):
    """A list argument holds at most ``max_list`` elements (:mod:`uro_rec.limits`)."""
    bound = limits.get("max_list")
    if len(values) > bound:
        raise BadArg(f"{where}: {field} has {len(values)} elements, more than {bound} (the "
                     f"limit is {limits.hint('max_list')}); split the call")


def non_neg_int(value, where, field):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadArg(f"{where}: {field} must be a non-negative integer, got {value!r}")
    return int(value)


def pos_int(value, where, field):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadArg(f"{where}: {field} must be a positive integer, got {value!r}")
    return int(value)


def boolean(value, where, field):
    if not isinstance(value, bool):
        raise BadArg(f"{where}: {field} must be true or false, got {value!r}")
    return value


def finite_float(value, where, field):
    """A number as a float; bools, non-numbers and integers too large for a float are
    BadArg naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadArg(f"{where}: {field} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise BadArg(f"{where}: {field} is too large for a float: {value!r}") from None


def fraction(value, where, field):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadArg(f"{where}: {field} must be a number in (0, 1), got {value!r}")
    value = finite_float(value, where, field)
    if not (0.0 < float(value) < 1.0) or math.isnan(value):
        raise BadArg(f"{where}: {field} must be a number in (0, 1), got {value!r}")
    return float(value)


def choice(value, allowed, where, field):
    if isinstance(value, str) and str(value) in allowed:
        return str(value)
    raise BadArg(
        f"{where}: {field} must be one of {', '.join(allowed)}, got {value!r}"
    )


def plain(value):
    """Erlang-decoded value -> plain Python for libreco kwargs.

    Atoms become plain str (libreco compares strings with ``==`` and writes
    them to JSON, both fine with a str subclass, but ``type(x) is str`` checks
    and pickling would see our class); nested lists/tuples/dicts are converted
    recursively; tuples stay tuples (libreco takes ``lower_upper_bound`` as one).
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value
