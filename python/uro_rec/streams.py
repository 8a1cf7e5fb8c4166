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
"""
import io
import logging
import os
import re
import sys

from . import port

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_SPLIT = re.compile(r"[\r\n]")
_EPOCH = re.compile(r"^Epoch (\d+) elapsed: ([0-9.eE+-]+)s$")
_STAGE = re.compile(r"^(.+?) elapsed: ([0-9.eE+-]+)s$")
_LOSS = re.compile(r"^train_loss: ([0-9.eE+-]+|nan|inf)$")
_EVAL = re.compile(r"^eval ([A-Za-z_@0-9]+): ([0-9.eE+-]+)%?$")


def strip_ansi(text):
    return _ANSI.sub("", text)


class PortStream(io.TextIOBase):
    """File-like object writing to the port's log (see module doc)."""

    def __init__(self, level="info"):
        super().__init__()
        self.level = level
        self._buf = ""
        self._epoch = None  # (epoch, seconds) of the last epoch line seen

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
        line = strip_ansi(raw).strip()
        if not line:
            return
        port.log(self.level, line)
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
            port.log(record.levelname.lower(), self.format(record))
        except Exception:  # never let logging break a call
            pass


def install():
    """Route stdout/stderr and Python logging to the port (C side, at start-up)."""
    # TensorFlow's C++ logging writes to fd 2 directly; keep it to errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stdout = PortStream("info")
    sys.stderr = PortStream("warning")
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
