"""{csv, Path} (uro_rec.csv_reader): errors that never repeat the file, bounded memory, the
data directory. Issue 13's failures 3 (a file's contents echoed in an error) and 4 (a
newline-free file read whole) are test_no_error_repeats_the_file and
test_a_newline_free_file_is_refused_in_bounded_memory."""
import os
import subprocess
import sys
import textwrap

import pytest

from uro_rec import sources
from uro_rec.errors import BadArg

SECRET = "s3cr3t-h13"


def _bad(path, where="train: data"):
    with pytest.raises(BadArg) as e:
        sources.load(("csv", str(path)), where)
    return e.value.detail


@pytest.mark.parametrize("body, at", [
    # the first line of a shadow file, as {csv, <<"/etc/shadow">>} once answered with
    (f"root:{SECRET}:20228:0:99999:7:::\n", "line 1"),
    (f"user,item,{SECRET}\n1,2,3\n", "line 1, column 3"),
    (f"user,item,label\n1,2,1\n3,4,{SECRET}\n", "line 3, column 3 (label)"),
    (f"user,item,label,time\n1,2,1,5\n3,4,1,{SECRET}\n", "line 3, column 4 (time)"),
    (f"user,item,label\n1,2,1\n{SECRET},4\n", "line 3: 2 fields, the header has 3"),
    (f"user,item,label\n1,2,1\n\"{SECRET}\n\",4,1\n", "line 3: a quoted field runs over"),
    (f"user,item,label\n1,2,nan{SECRET}\n", "line 2, column 3"),
])
def test_no_error_repeats_the_file(tmp_path, body, at):
    p = tmp_path / "secret.csv"
    p.write_text(body)
    msg = _bad(p)
    assert SECRET not in msg and "root:" not in msg, msg
    assert at in msg and str(p) in msg, msg


def test_invalid_utf8_is_located_not_quoted(tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes(b"user,item,label\n1,2,1\nab,jos\xe9,1\n")
    msg = _bad(p)
    assert "line 3, column 2: not valid UTF-8 (byte 7 of the line)" in msg, msg
    assert "\\xe9" not in msg and "0xe9" not in msg and "jos" not in msg


def test_good_files(tmp_path):
    p = tmp_path / "ok.csv"
    # a byte order mark, CRLF, quoted fields with commas and quotes, a blank line, no final
    # line break
    p.write_bytes(b'\xef\xbb\xbfUser,Item,Label\r\n1,"a,b",1\r\n\r\n2,"say ""hi""",0.5\r\n'
                  b'-3,007,1')
    df = sources.load(("csv", str(p)))
    assert df["user"].tolist() == [1, 2, -3]
    assert df["item"].tolist() == ["a,b", 'say "hi"', "007"]  # "007" is not the integer 7
    assert df["label"].tolist() == [1.0, 0.5, 1.0]


def test_line_and_row_bounds_are_configurable(tmp_path, monkeypatch):
    p = tmp_path / "rows.csv"
    p.write_text("user,item,label\n" + "".join(f"{u},{u % 7},1\n" for u in range(50)))
    assert len(sources.load(("csv", str(p)))) == 50
    monkeypatch.setenv("URO_REC_MAX_ROWS", "49")
    msg = _bad(p)
    assert "line 51: more than 49 rows" in msg and "URO_REC_MAX_ROWS" in msg, msg
    monkeypatch.setenv("URO_REC_MAX_ROWS", "50")
    assert len(sources.load(("csv", str(p)))) == 50
    with pytest.raises(BadArg, match="more than 50 rows"):
        sources.load(("rows", [(u, 1, 1.0) for u in range(51)]))
    # a line of exactly the limit, its line break included, passes; one byte more does not
    monkeypatch.setenv("URO_REC_CSV_MAX_LINE", "16")
    assert len(sources.load(("csv", str(p)))) == 50
    long = tmp_path / "long.csv"
    long.write_text("user,item,label\n1,2,1\n123456789,1234,1\n")  # 17 bytes with its \n
    msg = _bad(long)
    assert "line 3: longer than 16 bytes" in msg and "--csv-max-line" in msg, msg
    monkeypatch.setenv("URO_REC_CSV_MAX_LINE", "0")
    with pytest.raises(Exception, match="URO_REC_CSV_MAX_LINE"):
        sources.load(("csv", str(p)))


# The port once read a 2 GB file with no line break whole (752 MB -> 4.96 GB resident). A
# child process reads a 512 MB one (sparse: no disk) and reports how far its peak resident
# size rose; the reader may hold one line of 64 KiB, the old one held the whole file.
_PEAK = textwrap.dedent("""
    import resource, sys
    from uro_rec import sources
    from uro_rec.errors import BadArg
    sources.load(("rows", [(1, 2, 1.0)]))  # pandas and numpy warmed up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        sources.load(("csv", sys.argv[1]))
        print("LOADED")
    except BadArg as e:
        print(e.detail)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
""")


def test_a_newline_free_file_is_refused_in_bounded_memory(tmp_path):
    p = tmp_path / "sparse.csv"
    with open(p, "wb") as f:
        f.write(b"user,item,label\n")
        f.truncate(512 << 20)
    pkg = os.path.dirname(os.path.dirname(sources.__file__))
    out = subprocess.run([sys.executable, "-c", _PEAK, str(p)], capture_output=True, text=True,
                         cwd=pkg, env={**os.environ, "PYTHONPATH": pkg}, timeout=300)
    assert out.returncode == 0, out.stderr
    detail, grew_mib = out.stdout.splitlines()[-2], int(out.stdout.splitlines()[-1])
    assert grew_mib < 64, f"peak resident size grew by {grew_mib} MiB reading {p}"
    assert "line 2: longer than 65536 bytes" in detail, out.stdout


# ---- the data directory ---------------------------------------------------------------------

@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "ok.csv").write_text("user,item,label\n1,2,1\n")
    outside = tmp_path / "outside.csv"
    outside.write_text(f"user,item,label\n1,2,{SECRET}\n")
    (d / "escape").symlink_to(outside)
    (d / "up").symlink_to(tmp_path)
    monkeypatch.setenv("URO_REC_DATA_DIR", str(d))
    return d


def test_data_dir_confines_csv_paths(data_dir, tmp_path):
    assert len(sources.load(("csv", str(data_dir / "sub" / "ok.csv")))) == 1
    assert len(sources.load(("csv", "sub/ok.csv"))) == 1  # relative to the data dir
    assert len(sources.load(("csv", "sub/../sub/ok.csv"))) == 1
    for path in [str(tmp_path / "outside.csv"), "../outside.csv", "escape", "up/outside.csv",
                 str(data_dir / "sub" / ".." / ".." / "outside.csv"), "/etc/passwd",
                 str(tmp_path / "no-such-file.csv")]:  # existence outside is not disclosed
        msg = _bad(path)
        assert "is outside the data directory" in msg and SECRET not in msg, (path, msg)
    assert "does not exist" in _bad("sub/missing.csv")


def test_data_dir_that_is_not_a_directory_refuses_everything(data_dir, monkeypatch):
    monkeypatch.setenv("URO_REC_DATA_DIR", str(data_dir / "sub" / "ok.csv"))
    assert "is not a directory" in _bad("ok.csv")


def test_only_regular_files_and_never_blocking(tmp_path, monkeypatch):
    monkeypatch.delenv("URO_REC_DATA_DIR", raising=False)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "is not a regular file" in _bad(fifo)  # no writer: a blocking open would hang
    assert "is not a regular file" in _bad("/dev/zero")
    assert "is not a regular file" in _bad(tmp_path)
    for path in ["", "a\0b", b"/etc/passwd"]:
        with pytest.raises(BadArg, match="non-empty string"):
            sources.load(("csv", path))
