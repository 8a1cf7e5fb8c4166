"""The SQL source's row bound: which queries are wrapped in a LIMIT, and that the statement
wrapped is exactly the query (the server's side is test/db_test.escript's case 1e)."""
import pytest

from uro_rec.sql_text import row_capped


def wrapped(body, limit=11):
    return f"SELECT * FROM (\n{body}\n) AS uro_rec_source LIMIT {limit}"


@pytest.mark.parametrize("query, body", [
    ("SELECT 1", "SELECT 1"),
    ("  select a, b, c from t ;  \n", "select a, b, c from t"),
    ("-- why\nWITH g AS (SELECT 1) SELECT * FROM g; -- done", "WITH g AS (SELECT 1) SELECT * FROM g"),
    ("/* a /* nested */ comment */ VALUES (1, 2, 3);;", "VALUES (1, 2, 3)"),
    ("TABLE interactions", "TABLE interactions"),
    ("(SELECT 1) UNION (SELECT 2) -- end", "(SELECT 1) UNION (SELECT 2)"),
    ("SELECT ';', '--', 'it''s', \"a;b\", $$;$$, $t$ ' ; $t$ FROM x /* ; */ ;",
     "SELECT ';', '--', 'it''s', \"a;b\", $$;$$, $t$ ' ; $t$ FROM x"),
    ("SELECT u, i, 1.0 FROM t WHERE u = $1 -- no semicolon", "SELECT u, i, 1.0 FROM t WHERE u = $1"),
])
def test_one_query_is_wrapped_without_its_trailing_semicolons_and_comments(query, body):
    assert row_capped(query, 10) == wrapped(body)


@pytest.mark.parametrize("query", [
    "CREATE TABLE x (a int)",                       # not a query: 42809 as before
    "INSERT INTO t VALUES (1) RETURNING *",
    "SELECT 1; SELECT 2",                           # two statements: the server's error
    "SELECT 1; -- one\n; DELETE FROM t",
    "  -- only a comment",
    "",
])
def test_anything_else_is_left_alone(query):
    assert row_capped(query, 10) == query
