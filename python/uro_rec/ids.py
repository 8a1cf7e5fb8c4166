"""User and item ids: what an id is in Python, and its text in the database.

An id is an integer (any size) or a binary, whatever bytes the binary holds (docs/PROTOCOL.md,
"Ids"). In Python:

- an integer is an ``int``;
- a binary that is UTF-8 arrives from the codec (``c_src/term.c``) as a ``str`` and stays one;
- a binary that is not UTF-8 (a raw 16-byte UUID, ``<<255,254,0>>``) arrives as ``bytes`` and
  becomes a ``str`` holding surrogate escapes (PEP 383: each byte that is not part of valid
  UTF-8 is the character U+DC80 + byte). The map is one to one: a UTF-8 binary never decodes
  to such characters. So every binary id is a ``str``: one type per column, as training needs
  (libreco sorts the ids), saved in the model's JSON and numpy files like any other, and the
  codec turns an escaped ``str`` back into the same bytes on the way out.

In the database's text columns (``export``'s lists, ``observe``'s and ``record``'s rows, an
``{sql, ...}`` source's id columns) an id is :func:`to_text`: an integer in decimal; a binary
as its UTF-8 text, except when that cannot be text or could be mistaken for the other form --
the binary is not UTF-8, holds a NUL byte (text columns cannot), or its text is itself of the
form ``\\x`` + hex digits -- then ``\\x`` followed by two lowercase hex digits per byte (how
PostgreSQL prints a bytea). :func:`from_text` reverses it, so an id written by one port reads
back as the same id in another.
"""
import re

_HEX_TEXT = re.compile(r"\\x(?:[0-9a-f]{2})*")
_ESCAPES = re.compile("[\udc80-\udcff]")


def from_term(value):
    """A binary id as Python holds it: ``bytes`` (not UTF-8) -> escaped ``str``."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "surrogateescape")
    return value


def to_bytes(value):
    """The bytes of a binary id (its ``str`` form, escapes included)."""
    return value.encode("utf-8", "surrogateescape")


def to_text(value):
    """An id's text in a database text column (see the module doc)."""
    if isinstance(value, int):
        return str(int(value))
    s = str(value)
    if "\0" in s or _ESCAPES.search(s) or _HEX_TEXT.fullmatch(s):
        return "\\x" + to_bytes(s).hex()
    return s


def from_text(text):
    """The id a database text column holds: ``\\x`` + hex digits is the binary of those bytes."""
    if _HEX_TEXT.fullmatch(text):
        return from_term(bytes.fromhex(text[2:]))
    return text


def from_texts(values):
    """from_text over a column of str, looking at each distinct value once."""
    special = {v: from_text(v) for v in set(values) if v.startswith("\\x")}
    if all(k == v for k, v in special.items()):
        return values
    return [special.get(v, v) for v in values]
