"""``{csv, Path}``: the file read as a bounded stream, confined to the data directory, and
errors that never repeat what the file holds.

Three rules, each from an incident (issue 13):

- **Errors name the path, the line and the column, never the file's bytes.** A port may run
  as a user that can read files the caller cannot (``{csv, <<"/etc/shadow">>}`` once answered
  with a line of it), so no message quotes a header, a field, a row or even the byte that is
  not UTF-8 (Python's own UnicodeDecodeError text does; it is not passed on).
- **Memory is bounded whatever the file.** Lines are read with ``readline(limit)``, so a
  line longer than ``csv_max_line`` bytes is refused after reading that many bytes (a 2 GB
  file with no line break once took the port to 4.96 GB), and rows past ``max_rows`` are
  refused (:mod:`uro_rec.limits`). A record is one line: a quoted field may hold commas and
  quotes but not a line break, so no record can grow past one line either.
- **The data directory.** With ``--data-dir`` (or URO_REC_DATA_DIR) set, the path must lie
  inside it after symlinks and ``..`` are resolved (a relative path is taken relative to
  it). The check is made on the name before opening and again on the descriptor actually
  opened (``/proc/self/fd``), so a symlink swapped in between cannot escape. FIFOs and
  devices are refused without blocking (O_NONBLOCK, then fstat).

Ids repeat on every interaction, so each distinct field text is parsed once and the same
Python object reused (an intern table, as c_src/db_columns.c does for SQL text columns).
"""
import csv
import math
import os
import stat
from array import array

from . import limits
from .errors import BadArg

HEADER = ("user", "item", "label", "time")
_FIELDS = ("user", "item", "label", "time")


def parse_id(text):
    """CSV ids: an integer if the field is one written canonically ("7", "-7"), else the
    string itself, so "007" and "7" stay two ids."""
    t = text.strip()
    if t.isascii() and t.lstrip("-").isdigit() and str(int(t)) == t:
        return int(t)
    return t


def _shown(path):
    return path if len(path) <= 300 else path[:300] + "..."


def _inside(real, root):
    return real == root or real.startswith(root.rstrip("/") + "/")


def _data_root(where):
    """The resolved data directory, or None when reads are not confined."""
    configured = limits.data_dir()
    if configured is None:
        return None
    root = os.path.realpath(configured)
    if not os.path.isdir(root):
        raise BadArg(f"{where}: the data directory {_shown(configured)} (--data-dir or "
                     f"{limits.DATA_DIR_ENV}) is not a directory; no csv file can be read")
    return root


def open_confined(path, where):
    """A binary file object for ``path``, a regular file inside the data directory (when
    one is set). BadArg, naming only the path, for anything else."""
    if isinstance(path, bytes) or not isinstance(path, str) or not path or "\0" in path:
        raise BadArg(f"{where}: csv path must be a non-empty string without NUL bytes")
    root = _data_root(where)
    full = os.path.join(root, path) if root else os.path.abspath(path)
    outside = (f"{where}: csv {_shown(path)} is outside the data directory {root} "
               f"(--data-dir or {limits.DATA_DIR_ENV})")
    # Before opening: refusing by name leaks nothing about files outside the directory.
    if root and not _inside(os.path.realpath(full), root):
        raise BadArg(outside)
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadArg(f"{where}: csv file {_shown(path)} does not exist") from None
    except OSError as e:
        raise BadArg(f"{where}: csv file {_shown(path)} cannot be opened: "
                     f"{os.strerror(e.errno) if e.errno else 'error'}") from None
    try:
        if root and not _inside(os.readlink(f"/proc/self/fd/{fd}"), root):
            raise BadArg(outside)  # a component was swapped for a symlink after the check
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadArg(f"{where}: csv {_shown(path)} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=1 << 16)
    except BaseException:
        os.close(fd)
        raise


class _Lines:
    """The file's lines, decoded, each at most ``max_line`` bytes, for csv.reader; keeps the
    number of the line being parsed. ``pending`` is set when a line is handed out and
    cleared by the caller when csv.reader returns its row: a request for another line while
    it is set means a quoted field ran over a line break."""

    def __init__(self, f, where, path, max_line):
        self.f, self.where, self.path, self.max_line = f, where, path, max_line
        self.lineno = 0
        self.pending = False

    def fail(self, what, column=None):
        at = f"line {self.lineno}" + (f", column {column}" if column else "")
        raise BadArg(f"{self.where}: csv {_shown(self.path)} {at}: {what}")

    def __iter__(self):
        return self

    def __next__(self):
        if self.pending:
            self.fail("a quoted field runs over a line break; a record must be one line")
        raw = self.f.readline(self.max_line + 1)
        if not raw:
            raise StopIteration
        self.lineno += 1
        if len(raw) > self.max_line:
            self.fail(f"longer than {self.max_line} bytes (the limit is "
                      f"{limits.hint('csv_max_line')})")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            # e's own text quotes the byte: say where it is instead.
            self.fail(f"not valid UTF-8 (byte {e.start + 1} of the line)",
                      raw.count(b",", 0, e.start) + 1)
        if self.lineno == 1 and line.startswith("\ufeff"):
            line = line[1:]  # a byte order mark, as spreadsheets write
        self.pending = True
        return line


def _check_header(lines, header):
    names = [h.strip().lower() for h in header]
    if len(names) not in (3, 4):
        lines.fail(f"the header must be user,item,label[,time]: it has {len(names)} "
                   f"column{'s' if len(names) != 1 else ''}")
    for col, (got, want) in enumerate(zip(names, HEADER), start=1):
        if got != want:
            lines.fail(f"the header must be user,item,label[,time]: this column is not "
                       f"{want}", col)
    return len(names)


def _number(lines, text, col):
    try:
        value = float(text)
    except ValueError:
        lines.fail("not a number", f"{col} ({_FIELDS[col - 1]})")
    if not math.isfinite(value):
        lines.fail("not a finite number", f"{col} ({_FIELDS[col - 1]})")
    return value


def read(path, where):
    """(users, items, labels, times or None) of the file at ``path``: ids parsed by
    :func:`parse_id` (one object per distinct text), labels and times as float arrays."""
    max_line, max_rows = limits.get("csv_max_line"), limits.get("max_rows")
    with open_confined(path, where) as f:
        lines = _Lines(f, where, path, max_line)
        try:
            reader = csv.reader(lines)
            header = next(reader, None)
            lines.pending = False
            if header is None:
                raise BadArg(f"{where}: csv {_shown(path)} is empty: no header line")
            width = _check_header(lines, header)
            users, items, labels = [], [], array("d")
            times = array("d") if width == 4 else None
            ids = {}
            for row in reader:
                lines.pending = False
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != width:
                    lines.fail(f"{len(row)} fields, the header has {width}")
                if len(labels) >= max_rows:
                    lines.fail(f"more than {max_rows} rows (the limit is "
                               f"{limits.hint('max_rows')})")
                u, i = row[0], row[1]
                users.append(ids[u] if u in ids else ids.setdefault(u, parse_id(u)))
                items.append(ids[i] if i in ids else ids.setdefault(i, parse_id(i)))
                labels.append(_number(lines, row[2], 3))
                if times is not None:
                    times.append(_number(lines, row[3], 4))
        except csv.Error:
            # csv's messages describe the syntax, but say it in our words all the same.
            lines.fail("not valid CSV (a quote or a field in the wrong place)")
        except OSError as e:
            raise BadArg(f"{where}: csv {_shown(path)} cannot be read: "
                         f"{os.strerror(e.errno) if e.errno else 'error'}") from None
    if not users:
        raise BadArg(f"{where}: csv {_shown(path)} has no rows")
    return users, items, labels, times
