"""``{csv, Path}``: the file read as a bounded stream, confined to the data directory, and
errors that never repeat what the file holds.

Three rules, each from an incident (issue 13):

- **Errors name the path, the line and the column, never the file's bytes.** A port may run
  as a user that can read files the caller cannot (``{csv, <<"/etc/shadow">>}`` once answered
  with a line of it), so no message quotes a header, a field, a row or even the byte that is
  not UTF-8 (Python's own UnicodeDecodeError text does; it is not passed on).
- **Memory is bounded whatever the file.** The file is read in blocks of whole lines, so a
  line longer than ``csv_max_line`` bytes is refused after reading at most a block and a
  line (a 2 GB file with no line break once took the port to 4.96 GB), and rows past
  ``max_rows`` are refused (:mod:`uro_rec.limits`). A record is one line: a quoted field
  may hold commas and quotes but not a line break, so no record outgrows a line either.
- **The data directory.** With ``--data-dir`` (or URO_REC_DATA_DIR) set, the path must lie
  inside it after symlinks and ``..`` are resolved (a relative path is taken relative to
  it). The check is made on the name before opening and again on the descriptor actually
  opened (``/proc/self/fd``), so a symlink swapped in between cannot escape. FIFOs and
  devices are refused without blocking (O_NONBLOCK, then fstat).

Speed: no Python code runs per row but on errors. A block whose lines hold no quote and the
same number of commas (almost every file) is cut into columns by one ``split`` and slices;
any other block goes through csv.reader and ``zip``. Numbers are parsed by numpy, and ids
looked up in an intern table (each distinct text parsed once and the same object reused,
as c_src/db_columns.c does for SQL text columns). Over 1,000,000 rows: 0.83x the time of
the reader this replaced and 0.41x its peak memory (docs/OPERATIONS.md).
"""
import csv
import os
import stat
from itertools import repeat

import numpy as np

from . import limits
from .errors import BadArg

HEADER = ("user", "item", "label", "time")


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


_BLOCK = 1 << 20


class _Blocks:
    """The file as blocks of whole decoded lines, ``(text, lines)`` about 1 MiB each,
    without the line break after the last; every line at most ``max_line`` bytes with its
    break: memory stays near ``_BLOCK + max_line`` bytes whatever the file. ``first`` is
    the number of the first line of the block last handed out."""

    def __init__(self, f, where, path, max_line):
        self.f, self.where, self.path, self.max_line = f, where, path, max_line
        self.first = self.next = 1  # the first line of the block handed out / of the next

    def fail(self, what, line, column=None):
        at = f"line {line}" + (f", column {column}" if column else "")
        raise BadArg(f"{self.where}: csv {_shown(self.path)} {at}: {what}")

    def _too_long(self, line):
        self.fail(f"longer than {self.max_line} bytes (the limit is "
                  f"{limits.hint('csv_max_line')})", line)

    def __iter__(self):
        carry = b""
        while True:
            block = self.f.read(_BLOCK)
            data = carry + block if carry else block
            if self.next == 1 and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]  # a byte order mark, as spreadsheets write
            if not block:
                if data:
                    yield self._lines(data)  # the last line, without a line break
                return
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if len(carry) >= self.max_line:  # no room left for its line break
                self._too_long(self.next + data.count(b"\n", 0, cut))
            if cut:
                yield self._lines(data[:cut - 1])

    def _lines(self, body):
        raw = body.split(b"\n")
        if max(map(len, raw)) >= self.max_line:
            self._too_long(self.next + next(k for k, r in enumerate(raw)
                                            if len(r) >= self.max_line))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            # e's own text quotes the byte: say where it is instead.
            start = body.rfind(b"\n", 0, e.start) + 1
            self.fail(f"not valid UTF-8 (byte {e.start - start + 1} of the line)",
                      self.next + body.count(b"\n", 0, e.start),
                      body.count(b",", start, e.start) + 1)
        self.first, self.next = self.next, self.next + len(raw)
        return text, text.split("\n")


def _check_header(blocks, header):
    names = [h.strip().lower() for h in header]
    if len(names) not in (3, 4):
        blocks.fail(f"the header must be user,item,label[,time]: it has {len(names)} "
                    f"column{'s' if len(names) != 1 else ''}", 1)
    for col, (got, want) in enumerate(zip(names, HEADER), start=1):
        if got != want:
            blocks.fail(f"the header must be user,item,label[,time]: this column is not "
                        f"{want}", 1, col)
    return len(names)


class _Ids(dict):
    """Field text -> id, each distinct text parsed once (:func:`parse_id`) and the same
    object returned after: ids repeat on every interaction."""

    def __missing__(self, text):
        value = self[text] = parse_id(text)
        return value


class _Columns:
    """The rows read so far, as columns: ids, and labels and times as float64 arrays, one
    per block."""

    def __init__(self, width):
        self.width = width
        self.users, self.items, self.labels, self.times = [], [], [], []
        self.ids = _Ids()


def _floats(blocks, texts, col, line_of):
    """A column of numbers from their texts (numpy parses them: twice as fast as float()
    a row); the first bad one is reported by its line."""
    where = f"{col} ({HEADER[col - 1]})"
    try:
        values = np.array(texts, dtype=np.float64)
    except ValueError:
        for j, text in enumerate(texts):
            try:
                float(text)
            except ValueError:
                blocks.fail("not a number", line_of(j), where)
        raise
    finite = np.isfinite(values)
    if not finite.all():
        blocks.fail("not a finite number", line_of(int(np.argmin(finite))), where)
    return values


def _first_spanning(lines):
    """The index of the first line whose record does not end on it."""
    reader = csv.reader(lines, strict=True)
    for k, _row in enumerate(reader, start=1):
        if reader.line_num != k:
            return k - 1
    return len(lines) - 1  # an unclosed quote on the last line


def _rows(blocks, lines, width):
    """The rows of one block, as parsed, and the index of each in ``lines`` (None when
    they are one to one); blank lines are dropped, any other row of the wrong width is an
    error."""
    reader = csv.reader(lines, strict=True)
    try:
        rows = list(reader)
    except csv.Error:
        # csv's messages describe the syntax, but say it in our words all the same.
        blocks.fail("not valid CSV (a quote not closed on its line, or one in the wrong "
                    "place)", blocks.first + _first_spanning(lines))
    if reader.line_num != len(rows):
        blocks.fail("a quoted field runs over a line break; a record must be one line",
                    blocks.first + _first_spanning(lines))
    bad = [k for k, r in enumerate(rows) if len(r) != width]
    if not bad:
        return rows, None
    for k in bad:
        if rows[k] and (len(rows[k]) > 1 or rows[k][0].strip()):
            blocks.fail(f"{len(rows[k])} fields, the header has {width}", blocks.first + k)
    blank = set(bad)
    index = [k for k in range(len(rows)) if k not in blank]
    return [rows[k] for k in index], index


def _fast_fields(text, lines, width):
    """The block's columns without csv.reader, or None: when no line holds a quote and every
    line holds exactly ``width - 1`` commas (what almost every file is), splitting on commas
    is what csv would do, in two C calls for the whole block instead of a list a row."""
    commas = width - 1
    if '"' in text or not all(map(commas.__eq__, map(str.count, lines, repeat(",")))):
        return None
    flat = text.replace("\n", ",").split(",")
    return [flat[c::width] for c in range(width)]


def _block_rows(blocks, text, lines, cols, max_rows):
    """Adds the rows of one block of lines to ``cols``."""
    fields, index = _fast_fields(text, lines, cols.width), None
    if fields is None:
        rows, index = _rows(blocks, lines, cols.width)
        if not rows:
            return
        fields = list(zip(*rows))  # columns, transposed in C

    def line_of(j):
        return blocks.first + (index[j] if index else j)

    n, room = len(fields[0]), max_rows - len(cols.users)
    if n > room:
        blocks.fail(f"more than {max_rows} rows (the limit is {limits.hint('max_rows')})",
                    line_of(room))
    cols.labels.append(_floats(blocks, fields[2], 3, line_of))
    if cols.width == 4:
        cols.times.append(_floats(blocks, fields[3], 4, line_of))
    cols.users.extend(map(cols.ids.__getitem__, fields[0]))
    cols.items.extend(map(cols.ids.__getitem__, fields[1]))


def read(path, where):
    """(users, items, labels, times or None) of the file at ``path``: ids parsed by
    :func:`parse_id` (one object per distinct text), labels and times as float arrays."""
    max_line, max_rows = limits.get("csv_max_line"), limits.get("max_rows")
    with open_confined(path, where) as f:
        blocks = _Blocks(f, where, path, max_line)
        cols = width = None
        try:
            for text, lines in blocks:
                if cols is None:  # the header: the first line
                    try:
                        header = next(csv.reader(lines[:1], strict=True))
                    except csv.Error:
                        blocks.fail("not valid CSV", 1)
                    width = _check_header(blocks, header)
                    cols, blocks.first = _Columns(width), 2
                    text, lines = text[len(lines[0]) + 1:], lines[1:]
                    if not lines:
                        continue
                _block_rows(blocks, text, lines, cols, max_rows)
        except OSError as e:
            raise BadArg(f"{where}: csv {_shown(path)} cannot be read: "
                         f"{os.strerror(e.errno) if e.errno else 'error'}") from None
    if cols is None:
        raise BadArg(f"{where}: csv {_shown(path)} is empty: no header line")
    if not cols.users:
        raise BadArg(f"{where}: csv {_shown(path)} has no rows")
    times = np.concatenate(cols.times) if width == 4 else None
    return cols.users, cols.items, np.concatenate(cols.labels), times
