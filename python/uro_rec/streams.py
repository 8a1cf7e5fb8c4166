"""sys.stdout/sys.stderr replacements that turn prints into port logs and events.

Inside the port, fd 1 belongs to the Erlang protocol, so nothing may print
there. libreco prints a lot (coloured with ANSI codes) and tqdm redraws progress
bars with ``\\r``. A :class:`PortStream` buffers text, splits it into lines on
``\\n`` and ``\\r``, strips ANSI escapes, drops empty lines and sends each line
with ``log(level, line)``.

It also recognises libreco's training prints and sends structured events for
the running call:

- ``Epoch 3 elapsed: 0.123s`` (time_block in every trainer)
  -> ``#{type => epoch, epoch => 3, seconds => 0.123}``
- ``train_loss: 0.6931`` (printed right after, when fit verbose >= 2)
  -> ``#{type => epoch, epoch => 3, seconds => 0.123, loss => 0.6931}``
- ``eval roc_auc: 0.5123`` (when evaluating during fit)
  -> ``#{type => metric, epoch => 3, metric => <<"roc_auc">>, value => 0.5123}``
- any other ``<stage> elapsed: 1.5s`` (similarity computation, gensim...)
  -> ``#{type => stage, stage => <<"sim_matrix">>, seconds => 1.5}``

Each line's log level comes from :data:`LEVELS`, a table with the reason for each choice:
progress (epoch lines, banners, tqdm bars) and the deprecation notices of TensorFlow and Keras
go out at ``debug``, an exception's traceback at ``error``, and any other line at its stream's
level (stdout ``info``, stderr ``warning``) or its logging record's. Python's ``warnings`` are
one line each (category, message, where), classified the same way.
"""
import io
import logging
import os
import re
import sys
import warnings

from . import port

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_SPLIT = re.compile(r"[\r\n]")
_EPOCH = re.compile(r"^Epoch (\d+) elapsed: ([0-9.eE+-]+)s$")
_STAGE = re.compile(r"^(.+?) elapsed: ([0-9.eE+-]+)s$")
_LOSS = re.compile(r"^train_loss: ([0-9.eE+-]+|nan|inf)$")
_EVAL = re.compile(r"^eval ([A-Za-z_@0-9]+): ([0-9.eE+-]+)%?$")


# How a line of output becomes a log level: the first rule that matches the line (ANSI codes
# stripped, blanks trimmed) wins; with none, the stream's level or the logging record's. An
# explicit table rather than levels scattered through the code, so that each choice is seen
# with its reason (python/tests/test_streams.py checks every row).
LEVELS = [
    (re.compile(r"^Epoch \d+ elapsed: "), "debug",
     "libreco's line at the end of every epoch: progress, and an epoch event already"),
    (re.compile(r"^(train_loss|eval [A-Za-z_@0-9]+): "), "debug",
     "an epoch's loss or metric: progress, and an event already"),
    (re.compile(r"^=+$"), "debug", "libreco's banner between epochs"),
    (re.compile(r"^Training start time: "), "debug", "libreco's banner before the first epoch"),
    (re.compile(r"^.+ elapsed: [0-9.eE+-]+s$"), "debug", "a timed stage: progress, and an event"),
    (re.compile(r"\d+%\|.*\|"), "debug",
     "a tqdm progress bar (on stderr), redrawn several times a second"),
    (re.compile(r"deprecat|will be removed in a future version|Instructions for updating", re.I),
     "debug", "TensorFlow's and Keras's deprecation notices: about their code, not for uro to act on"),
    (re.compile(r"^FutureWarning: "), "debug",
     "a library announcing a change of its own API (the category Python gives that): not for uro"),
    (re.compile(r"^Traceback \(most recent call last\):"), "error",
     "an exception printed (a thread's, a callback's): a failure; the lines after it follow"),
]


def classify(line, default):
    """The log level of ``line`` (see :data:`LEVELS`), else ``default``."""
    for pattern, level, _reason in LEVELS:
        if pattern.search(line):
            return level
    return default


def strip_ansi(text):
    return _ANSI.sub("", text)


class PortStream(io.TextIOBase):
    """File-like object writing to the port's log (see module doc)."""

    def __init__(self, level="info"):
        super().__init__()
        self.level = level
        self._buf = ""
        self._epoch = None  # (epoch, seconds) of the last epoch line seen
        self._traceback = False  # inside a printed traceback: its lines are errors too

    # -- file protocol ----------------------------------------------------------------
    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "replace"

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    def fileno(self):
        raise io.UnsupportedOperation("PortStream has no file descriptor")

    def write(self, s):
        if not isinstance(s, str):
            s = s.decode("utf-8", "replace") if isinstance(s, (bytes, bytearray)) else str(s)
        self._buf += s
        if "\n" in self._buf or "\r" in self._buf:
            parts = _SPLIT.split(self._buf)
            self._buf = parts.pop()  # text after the last separator is incomplete
            for line in parts:
                self._line(line)
        return len(s)

    def flush(self):
        # A partial line (tqdm redraw in progress) stays buffered: emitting it
        # would split one line in two. close() emits it.
        pass

    def close(self):
        if self._buf:
            line, self._buf = self._buf, ""
            self._line(line)
        super().close()

    # -- lines ------------------------------------------------------------------------
    def _line(self, raw):
        text = strip_ansi(raw)
        line = text.strip()
        if not line:
            return
        level = classify(line, self.level)
        if level == "error" and line.startswith("Traceback"):
            self._traceback = True
        elif self._traceback:
            # A traceback is indented frames, then the unindented exception line that ends it.
            level = "error"
            self._traceback = text[:1].isspace()
        port.log(level, line)
        self._recognise(line)

    def _recognise(self, line):
        A = port.Atom
        m = _EPOCH.match(line)
        if m:
            self._epoch = (int(m.group(1)), float(m.group(2)))
            port.event({A("type"): A("epoch"), A("epoch"): self._epoch[0],
                        A("seconds"): self._epoch[1]})
            return
        m = _LOSS.match(line)
        if m and self._epoch is not None:
            port.event({A("type"): A("epoch"), A("epoch"): self._epoch[0],
                        A("seconds"): self._epoch[1], A("loss"): float(m.group(1))})
            return
        m = _EVAL.match(line)
        if m and self._epoch is not None:
            port.event({A("type"): A("metric"), A("epoch"): self._epoch[0],
                        A("metric"): m.group(1), A("value"): float(m.group(2))})
            return
        m = _STAGE.match(line)
        if m:
            port.event({A("type"): A("stage"), A("stage"): m.group(1),
                        A("seconds"): float(m.group(2))})

    def reset(self):
        """Forget the epoch context (called at the start of a training run)."""
        self._epoch = None


class _PortLogHandler(logging.Handler):
    def emit(self, record):
        try:
            message = self.format(record)
            port.log(classify(message, record.levelname.lower()), message)
        except Exception:  # never let logging break a call
            pass


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning: one log line, not the message and its source line on stderr."""
    text = f"{category.__name__}: {message} ({filename}:{lineno})"
    port.log(classify(text, "warning"), text)


def install():
    """Route stdout/stderr and Python logging to the port (C side, at start-up)."""
    # TensorFlow's C++ logging writes to fd 2 directly; keep it to errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stdout = PortStream("info")
    sys.stderr = PortStream("warning")
    warnings.showwarning = _show_warning
    root = logging.getLogger()
    # Only inside the port: outside it port.log itself goes through logging.
    if port.EMBEDDED and not any(isinstance(h, _PortLogHandler) for h in root.handlers):
        root.addHandler(_PortLogHandler())
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    return None  # nil: the streams themselves are not encodable


def reset_epochs():
    for s in (sys.stdout, sys.stderr):
        if isinstance(s, PortStream):
            s.reset()
