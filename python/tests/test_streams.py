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
    s.write("ial\rtrain:  50%|#####\rtrain: 100%|##########\n")
    assert logged == [
        ("warning", "Detect 2 unknown users"),
        ("warning", "partial"),
        ("warning", "train:  50%|#####"),
        ("warning", "train: 100%|##########"),
    ]


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
