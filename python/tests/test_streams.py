import io
import logging
import sys

import pytest

from uro_rec import port, streams
from uro_rec.port import Atom
from uro_rec.streams import PortStream


@pytest.fixture
def logged(monkeypatch):
    lines = []
    monkeypatch.setattr(port, "log", lambda level, msg: lines.append((level, msg)))
    return lines


def test_file_protocol():
    s = PortStream("info")
    assert not s.isatty() and s.encoding == "utf-8" and s.writable()
    with pytest.raises(io.UnsupportedOperation):
        s.fileno()
    assert s.write("abc") == 3
    s.flush()


def test_lines_split_on_newline_and_cr_ansi_stripped(logged):
    s = PortStream("warning")
    s.write("\x1b[31mDetect 2 unknown users\x1b[0m\n\n  \npart")
    s.write("ial\rtrain:  50%|#####     |\rtrain: 100%|##########|\n")
    assert logged == [
        ("warning", "Detect 2 unknown users"),
        ("warning", "partial"),
        ("debug", "train:  50%|#####     |"),
        ("debug", "train: 100%|##########|"),
    ]


# One line for each row of streams.LEVELS, as LibRecommender, tqdm and TensorFlow print them.
LEVEL_CASES = [
    ("Epoch 3 elapsed: 0.267s", "info", "debug"),
    ("train_loss: 0.8102", "info", "debug"),
    ("eval roc_auc: 0.7500", "info", "debug"),
    ("==============================", "info", "debug"),
    ("Training start time: 2026-12-01 02:24:43", "info", "debug"),
    ("sim_matrix elapsed: 1.500s", "info", "debug"),
    ("train:  25%|██▌       | 1/4 [00:00<00:00,  3.98it/s]", "warning", "debug"),
    ("From /venv/lib/python3.11/site-packages/tensorflow/python/compat/v2_compat.py:108: "
     "disable_resource_variables (from tensorflow.python.ops.variable_scope) is deprecated and "
     "will be removed in a future version.", "warning", "debug"),
    ("FutureWarning: the default of observed will change (x.py:3)", "warning", "debug"),
    ("Traceback (most recent call last):", "warning", "error"),
    # Everything else keeps its stream's level.
    ("Detect 2 unknown users", "warning", "warning"),
    ("hello from print", "info", "info"),
    ("MemoryError: cannot allocate", "warning", "warning"),
]


@pytest.mark.parametrize("line,stream,expected", LEVEL_CASES)
def test_levels_table(logged, line, stream, expected):
    s = PortStream(stream)
    s.write(line + "\n")
    assert logged == [(expected, line)]


def test_every_levels_row_is_exercised():
    lines = [line for line, _, _ in LEVEL_CASES]
    for pattern, _level, reason in streams.LEVELS:
        assert reason
        assert any(pattern.search(line) for line in lines), pattern.pattern


def test_a_printed_traceback_is_an_error_to_its_last_line(logged):
    s = PortStream("warning")
    s.write("Traceback (most recent call last):\n"
            '  File "/x/y.py", line 3, in f\n'
            "    raise ValueError(\"bad\")\n"
            "ValueError: bad\n"
            "after it\n")
    assert [level for level, _ in logged] == ["error", "error", "error", "error", "warning"]


def test_warnings_are_one_line_each_deprecations_at_debug(logged, monkeypatch):
    import warnings
    with warnings.catch_warnings():  # restores showwarning afterwards
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning", streams._show_warning)
        warnings.warn("`tf.layers.dense` is deprecated", UserWarning)
        warnings.warn("the data has 3 duplicates", UserWarning)
    assert [level for level, _ in logged] == ["debug", "warning"]
    assert logged[1][1].startswith("UserWarning: the data has 3 duplicates (")


def test_logging_records_keep_their_level_but_deprecations(logged):
    h = streams._PortLogHandler()
    make = lambda level, msg: logging.LogRecord("tf", level, __file__, 1, msg, None, None)
    h.emit(make(logging.WARNING, "x (from tensorflow.python.ops) is deprecated and will be removed"))
    h.emit(make(logging.WARNING, "real trouble"))
    h.emit(make(logging.ERROR, "failed"))
    assert [level for level, _ in logged] == ["debug", "warning", "error"]


def test_epoch_loss_metric_and_stage_events(logged):
    start = len(port.EVENTS)
    s = PortStream("info")
    print("Training start time: \x1b[35m2026-01-01\x1b[0m", file=s)
    print("Epoch 1 elapsed: 0.123s", file=s)
    print("\t \x1b[32mtrain_loss: 0.6931\x1b[0m", file=s)
    print("\t eval roc_auc: 0.7500", file=s)
    print("Epoch 2 elapsed: 0.100s", file=s)
    print("sim_matrix elapsed: 1.500s", file=s)
    ev = port.EVENTS[start:]
    T, E, S, L = Atom("type"), Atom("epoch"), Atom("seconds"), Atom("loss")
    assert ev[0] == {T: "epoch", E: 1, S: 0.123}
    assert ev[1] == {T: "epoch", E: 1, S: 0.123, L: 0.6931}
    assert ev[2] == {T: "metric", E: 1, Atom("metric"): "roc_auc", Atom("value"): 0.75}
    assert ev[3] == {T: "epoch", E: 2, S: 0.1}
    assert ev[4] == {T: "stage", Atom("stage"): "sim_matrix", S: 1.5}
    assert all(isinstance(k, Atom) for e in ev for k in e)
    assert isinstance(ev[0][T], Atom)


def test_install_replaces_stdout_and_stderr(monkeypatch, logged):
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    streams.install()
    assert isinstance(sys.stdout, PortStream) and sys.stdout.level == "info"
    assert isinstance(sys.stderr, PortStream) and sys.stderr.level == "warning"
    print("hello")
    assert ("info", "hello") in logged


def test_fallback_log_uses_python_logging(caplog):
    with caplog.at_level(logging.INFO, logger="uro_rec"):
        port.log("warning", "careful")
    assert "careful" in caplog.text
