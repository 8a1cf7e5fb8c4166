/*
 * copytext.c: export rows in COPY's text format (see copytext.h).
 *
 * copy_rows(head, tail, lists, texts) -> (bytes, rows)
 *
 *   head   bytes written first on every row: the escaped model name and a tab
 *   tail   bytes written last: a tab, the model version, a newline
 *   lists  [(user, [(item, score), ...]), ...]: what recommend_many returns
 *   texts  a dict the caller keeps for one export: id -> its escaped text (bytes). Ids
 *          repeat (an item appears in thousands of lists), so str() and escaping run once
 *          per distinct id.
 *   to_text  (optional) uro_rec.ids.to_text: the text of an id that is not plain text (the
 *          escaped bytes of a binary that is not UTF-8, a NUL, text that looks like \x-hex)
 *
 * A row is head, user, rank (1-based), item, repr(score), tail, tab-separated. The score is
 * written as Python's repr writes it (the shortest text that reads back as the same double),
 * so a score read back from the table equals the one recommend returns.
 */
#include "copytext.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t copytext_escape(char *dst, const char *src, size_t len)
{
    size_t out = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = src[i];
        const char *esc = ch == '\\' ? "\\\\" : ch == '\t' ? "\\t" : ch == '\n' ? "\\n"
                        : ch == '\r' ? "\\r" : NULL;
        if (esc) {
            dst[out++] = esc[0];
            dst[out++] = esc[1];
        } else {
            dst[out++] = ch;
        }
    }
    return out;
}

/* ---- a growing output buffer -------------------------------------------------------------- */

struct buffer {
    char *data;
    size_t len, cap;
};

static int reserve(struct buffer *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + more)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int append(struct buffer *b, const char *p, size_t n)
{
    if (reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* ---- one field ---------------------------------------------------------------------------- */

/* Whether C may write id's text itself: an int, or a str whose UTF-8 has no NUL and does not
 * start with \x (sets *utf8). Any other id (escaped bytes, NUL, hex-like text) gets its text
 * from uro_rec.ids.to_text, the one place that rule is written. */
static int plain_text(PyObject *s, const char **utf8, Py_ssize_t *len)
{
    *utf8 = PyUnicode_AsUTF8AndSize(s, len);
    if (!*utf8) {
        PyErr_Clear();
        return 0;
    }
    return !memchr(*utf8, '\0', (size_t)*len) && !(*len >= 2 && (*utf8)[0] == '\\' && (*utf8)[1] == 'x');
}

/* The escaped text of id, from texts or made (its text, UTF-8, escapes) and remembered there.
 * Borrowed reference (texts holds it); NULL with an exception set. */
static PyObject *text_of(PyObject *texts, PyObject *id, PyObject *to_text)
{
    PyObject *text = PyDict_GetItemWithError(texts, id);
    if (text || PyErr_Occurred())
        return text;
    PyObject *s = PyObject_Str(id);
    if (!s)
        return NULL;
    Py_ssize_t len;
    const char *utf8;
    if (!PyLong_Check(id) && !plain_text(s, &utf8, &len) && to_text) {
        Py_SETREF(s, PyObject_CallOneArg(to_text, id));
        if (!s)
            return NULL;
    }
    utf8 = PyUnicode_AsUTF8AndSize(s, &len);
    PyObject *bytes = utf8 ? PyBytes_FromStringAndSize(NULL, 2 * len) : NULL;
    if (bytes) {
        size_t n = copytext_escape(PyBytes_AS_STRING(bytes), utf8, (size_t)len);
        if (_PyBytes_Resize(&bytes, (Py_ssize_t)n) == 0 && PyDict_SetItem(texts, id, bytes) < 0)
            Py_CLEAR(bytes);
    }
    Py_DECREF(s);
    Py_XDECREF(bytes); /* texts keeps it alive */
    return bytes;
}

static int append_text(struct buffer *b, PyObject *texts, PyObject *id, PyObject *to_text)
{
    PyObject *text = text_of(texts, id, to_text);
    return text ? append(b, PyBytes_AS_STRING(text), (size_t)PyBytes_GET_SIZE(text)) : -1;
}

static int append_score(struct buffer *b, PyObject *score)
{
    double x = PyFloat_AsDouble(score);
    if (x == -1.0 && PyErr_Occurred())
        return -1;
    char *repr = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!repr)
        return -1;
    int rc = append(b, repr, strlen(repr));
    PyMem_Free(repr);
    return rc;
}

/* ---- rows ----------------------------------------------------------------------------------- */

static int bad(const char *what)
{
    PyErr_Format(PyExc_TypeError, "copy_rows: %s", what);
    return -1;
}

/* Appends the rows of one (user, [(item, score), ...]) pair; returns how many, or -1. */
static Py_ssize_t append_user(struct buffer *b, PyObject *head, PyObject *tail, PyObject *texts,
                              PyObject *to_text, PyObject *pair)
{
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyList_Check(PyTuple_GET_ITEM(pair, 1)))
        return bad("each entry must be (user, [(item, score), ...])");
    PyObject *user = PyTuple_GET_ITEM(pair, 0), *scored = PyTuple_GET_ITEM(pair, 1);
    Py_ssize_t n = PyList_GET_SIZE(scored);
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *entry = PyList_GET_ITEM(scored, r);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2)
            return bad("each list entry must be (item, score)");
        char rank[24];
        int rank_len = snprintf(rank, sizeof rank, "\t%zd\t", r + 1);
        if (append(b, PyBytes_AS_STRING(head), (size_t)PyBytes_GET_SIZE(head)) < 0 ||
            append_text(b, texts, user, to_text) < 0 || append(b, rank, (size_t)rank_len) < 0 ||
            append_text(b, texts, PyTuple_GET_ITEM(entry, 0), to_text) < 0 ||
            append(b, "\t", 1) < 0 ||
            append_score(b, PyTuple_GET_ITEM(entry, 1)) < 0 ||
            append(b, PyBytes_AS_STRING(tail), (size_t)PyBytes_GET_SIZE(tail)) < 0)
            return -1;
    }
    return n;
}

static PyObject *copy_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *head, *tail, *lists, *texts, *to_text = NULL;
    if (!PyArg_ParseTuple(args, "SSO!O!|O:copy_rows", &head, &tail, &PyList_Type, &lists,
                          &PyDict_Type, &texts, &to_text))
        return NULL;
    struct buffer b = {0};
    Py_ssize_t rows = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lists); i++) {
        Py_ssize_t n = append_user(&b, head, tail, texts, to_text, PyList_GET_ITEM(lists, i));
        if (n < 0) {
            free(b.data);
            return NULL;
        }
        rows += n;
    }
    PyObject *out = Py_BuildValue("(y#n)", b.data ? b.data : "", (Py_ssize_t)b.len, rows);
    free(b.data);
    return out;
}

static PyMethodDef copytext_methods[] = {
    {"copy_rows", copy_rows, METH_VARARGS,
     "copy_rows(head, tail, [(user, [(item, score)])], texts[, to_text]) -> (COPY text rows, "
     "row count)"},
    {NULL, NULL, 0, NULL},
};

int copytext_module_init(PyObject *module)
{
    return PyModule_AddFunctions(module, copytext_methods);
}
