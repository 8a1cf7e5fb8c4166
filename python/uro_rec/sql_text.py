"""SQL text read just far enough to bound a query's rows without touching its meaning.

A ``{sql, Query, Params}`` source is bounded by ``max_rows`` (:mod:`uro_rec.limits`) on the
server's side: the query becomes ``SELECT * FROM (<query>) AS uro_rec_source LIMIT max+1``,
which streams like the query itself and keeps its columns, so a result one row over the bound
is seen and refused without reading the rest. (The rows are counted in C as they stream,
c_src/db_columns.c, but that file has no bound of its own.)

Wrapping needs the query's last significant character: a trailing ``;`` or comment must go
outside the parentheses (``... FROM g; -- done`` is one statement to the server, but not
inside a subquery). :func:`row_capped` finds it with a scanner that knows quotes, quoted
identifiers, dollar quotes and comments, and leaves alone what it should not wrap: anything
that is not a query (DDL and INSERT then answer 42809 as before) and several statements
(which the server refuses with its own error, as before).
"""
import re

_QUERY_WORD = re.compile(r"(select|with|values|table)\b", re.IGNORECASE)
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _skip(q, i):
    """The index just past the quoted string, identifier or comment starting at ``i``, or
    ``i`` when none starts there."""
    c, n = q[i], len(q)
    if c in "'\"":
        j = i + 1
        while j < n:
            if q[j] == c:
                if j + 1 < n and q[j + 1] == c:  # '' or "" inside: the quote itself
                    j += 2
                    continue
                return j + 1
            j += 2 if c == "'" and q[j] == "\\" else 1  # E'...\'...' (harmless otherwise)
        return n
    if q.startswith("--", i):
        j = q.find("\n", i)
        return n if j < 0 else j + 1
    if q.startswith("/*", i):
        depth, j = 0, i
        while j < n:
            if q.startswith("/*", j):
                depth, j = depth + 1, j + 2
            elif q.startswith("*/", j):
                depth, j = depth - 1, j + 2
                if depth == 0:
                    return j
            else:
                j += 1
        return n
    m = _DOLLAR_TAG.match(q, i) if c == "$" else None
    if m:
        end = q.find(m.group(0), m.end())
        return n if end < 0 else end + len(m.group(0))
    return i


def statement_span(q):
    """(start, end) of the one statement in ``q``, comments, white space and trailing
    semicolons outside it; None when ``q`` holds more than one statement, or none."""
    i, n, start, end, ended = 0, len(q), None, None, False
    while i < n:
        j = _skip(q, i)
        significant = j == i or q[i] in "'\"$"
        if j == i:
            j = i + 1
            if q[i].isspace():
                significant = False
            elif q[i] == ";":
                significant, ended = False, start is not None
        if significant:
            if ended:
                return None  # something after a statement's semicolon: a second statement
            start = i if start is None else start
            end = j
        i = j
    return None if start is None else (start, end)


def row_capped(query, max_rows):
    """``query`` bounded to ``max_rows + 1`` rows when it is one query (SELECT, WITH, VALUES,
    TABLE, or a parenthesised one); else ``query`` unchanged."""
    span = statement_span(query)
    if span is None:
        return query
    body = query[span[0]:span[1]]
    if not _QUERY_WORD.match(body.lstrip("( \t\r\n")):
        return query
    # The line breaks: a comment inside must not swallow the closing parenthesis.
    return f"SELECT * FROM (\n{body}\n) AS uro_rec_source LIMIT {max_rows + 1}"
