"""NUL bytes in SQL (issue 13, failure 6): the query text and text parameters go to libpq as
C strings, so a NUL is refused as badarg before anything reaches the database; bytes
parameters (binary format) and COPY data may hold any byte."""
import pytest

from uro_rec import db, sources
from uro_rec.errors import BadArg


@pytest.mark.parametrize("query, params, message", [
    ("SELECT 1\x00", [], "the query text holds a NUL byte"),
    ("SELECT $1::TEXT", ["a\x00b"], "parameter $1 holds a NUL byte"),
    ("SELECT $1, $2", [1, "\x00"], "parameter $2 holds a NUL byte"),
])
def test_nul_is_badarg(query, params, message):
    with pytest.raises(BadArg, match=message.replace("$", r"\$")):
        db.check_nul(query, params)


def test_bytes_parameters_and_copy_data_pass():
    db.check_nul("SELECT $1::BYTEA, $2", [b"\x00\xff", None])
    db.check_nul("COPY t FROM STDIN", b"a\x00b\n")


def test_an_sql_source_with_nul_is_badarg_before_the_database():
    # Outside the port there is no database at all: the NUL check comes first.
    with pytest.raises(BadArg, match="NUL"):
        sources.from_sql("SELECT 1, 2, 3.0\x00", [])
    with pytest.raises(BadArg, match="NUL"):
        sources.from_sql("SELECT $1, 2, 3.0", ["u\x00"])
