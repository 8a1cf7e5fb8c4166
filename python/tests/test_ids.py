"""uro_rec.ids: an id is an id whatever bytes it holds (docs/PROTOCOL.md, "Ids")."""
import pytest

from uro_rec import ids, sources
from uro_rec.options import check_id

ODD = b"\xff\xfe\x00"
UUID = bytes.fromhex("9f3a00c2ff104be180007ad3fe019c5d")
BINARIES = [ODD, UUID, b"", b"plain", "josé".encode(), b"a\x00b", b"\\x41", b"\\x", b"\\xZZ",
            b"\xed\xa0\x80", b"\xc0\x80", bytes(range(256))]


@pytest.mark.parametrize("raw", BINARIES)
def test_a_binary_id_round_trips_through_python_and_text(raw):
    # what the codec hands Python: str when UTF-8, bytes otherwise
    try:
        term = raw.decode("utf-8")
    except UnicodeDecodeError:
        term = raw
    held = check_id(term, "t", "user")
    assert isinstance(held, str)
    assert ids.to_bytes(held) == raw
    text = ids.to_text(held)
    assert "\0" not in text
    text.encode("utf-8")  # valid text for a UTF-8 database
    assert ids.from_text(text) == held


def test_text_forms():
    assert ids.to_text(check_id(ODD, "t", "u")) == "\\xfffe00"
    assert ids.to_text("josé") == "josé"
    assert ids.to_text(2**70) == str(2**70)
    assert ids.to_text("a\0b") == "\\x610062"
    assert ids.to_text("\\x41") == "\\x5c783431"  # looks like hex: written as hex itself
    assert ids.to_text("\\xZZ") == "\\xZZ"        # does not: plain
    assert ids.from_text("\\x41") == "A"


def test_distinct_binaries_stay_distinct():
    held = [check_id(b, "t", "u") for b in BINARIES]
    assert len(set(held)) == len(BINARIES)
    assert len({ids.to_text(h) for h in held}) == len(BINARIES)


def test_sorted_with_utf8_ids_in_one_column():
    users = [check_id(b, "t", "u") for b in (ODD, UUID, b"u1")]
    col = sources.id_column(users, "t", "user")
    assert sorted(col) == sorted(users)  # one type: libreco can sort the unique ids


def test_from_texts_maps_only_hex_values():
    column = ["u1", "\\xfffe00", "u1", "\\x41"]
    assert ids.from_texts(column) == ["u1", ODD.decode("utf-8", "surrogateescape"), "u1", "A"]
    plain = ["u1", "u2"]
    assert ids.from_texts(plain) is plain
