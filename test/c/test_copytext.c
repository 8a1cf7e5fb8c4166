/*
 * test_copytext.c: cmocka tests for the export's COPY rows (c_src/copytext.c).
 *
 * The escapes, every field of a row (str, int and bignum ids, ranks, scores written as
 * Python's repr), the id cache, and the refusals of malformed lists. Run plain and under
 * AddressSanitizer + UBSan. The whole path, rows read back from PostgreSQL and compared
 * with recommend, is test/db_test.escript's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "copytext.h"

static PyObject *copy_rows;

static void test_escape_backslash_tab_newline_return(void **state)
{
    (void)state;
    char out[64];
    const char *in = "a\\b\tc\nd\re\"f'g";
    size_t n = copytext_escape(out, in, strlen(in));
    out[n] = 0;
    assert_string_equal(out, "a\\\\b\\tc\\nd\\re\"f'g");
    assert_int_equal(copytext_escape(out, "", 0), 0);
    /* worst case: every byte doubles */
    n = copytext_escape(out, "\\\\\t\t", 4);
    assert_int_equal(n, 8);
}

/* Runs copy_rows(head, tail, lists, texts) from Python source; returns the payload as str. */
static PyObject *run(const char *lists_src, PyObject *texts, Py_ssize_t *rows)
{
    PyObject *lists = PyRun_String(lists_src, Py_eval_input, PyEval_GetBuiltins(), PyEval_GetBuiltins());
    assert_non_null(lists);
    PyObject *out = PyObject_CallFunction(copy_rows, "y#y#OO", "m\t", (Py_ssize_t)2, "\t7\n",
                                          (Py_ssize_t)3, lists, texts);
    Py_DECREF(lists);
    if (!out)
        return NULL;
    PyObject *payload = PyTuple_GET_ITEM(out, 0);
    *rows = PyLong_AsSsize_t(PyTuple_GET_ITEM(out, 1));
    Py_INCREF(payload);
    Py_DECREF(out);
    return payload;
}

static void test_rows_of_every_id_kind(void **state)
{
    (void)state;
    PyObject *texts = PyDict_New();
    Py_ssize_t rows = -1;
    PyObject *p = run("[('u1', [('i1', 0.5), (42, 1.0)]),"
                      " (2**70, [('tab\\there', -1e-300)]),"
                      " ('nobody', []),"
                      " ('\\u00e9\\\\', [('nl\\nx', float('inf'))])]", texts, &rows);
    assert_non_null(p);
    assert_int_equal(rows, 4);
    assert_string_equal(PyBytes_AS_STRING(p),
                        "m\tu1\t1\ti1\t0.5\t7\n"
                        "m\tu1\t2\t42\t1.0\t7\n"
                        "m\t1180591620717411303424\t1\ttab\\there\t-1e-300\t7\n"
                        "m\t\xc3\xa9\\\\\t1\tnl\\nx\tinf\t7\n");
    /* every distinct id with a row was escaped once and remembered ('nobody' has none) */
    assert_int_equal(PyDict_Size(texts), 7);
    Py_DECREF(p);
    Py_DECREF(texts);
}

static void test_scores_read_back_exactly(void **state)
{
    (void)state;
    PyObject *texts = PyDict_New();
    Py_ssize_t rows;
    PyObject *p = run("[('u', [('a', 0.1 + 0.2), ('b', 1/3), ('c', 5e-324), ('d', 1.7976931348623157e308)])]",
                      texts, &rows);
    assert_non_null(p);
    assert_string_equal(PyBytes_AS_STRING(p),
                        "m\tu\t1\ta\t0.30000000000000004\t7\n"
                        "m\tu\t2\tb\t0.3333333333333333\t7\n"
                        "m\tu\t3\tc\t5e-324\t7\n"
                        "m\tu\t4\td\t1.7976931348623157e+308\t7\n");
    Py_DECREF(p);
    Py_DECREF(texts);
}

static void test_cached_text_is_used(void **state)
{
    (void)state;
    PyObject *texts = Py_BuildValue("{sy}", "x", "CACHED");
    Py_ssize_t rows;
    PyObject *p = run("[('x', [('x', 2.0)])]", texts, &rows);
    assert_non_null(p);
    assert_string_equal(PyBytes_AS_STRING(p), "m\tCACHED\t1\tCACHED\t2.0\t7\n");
    Py_DECREF(p);
    Py_DECREF(texts);
}

static void test_malformed_lists_raise_type_error(void **state)
{
    (void)state;
    const char *bad[] = {
        "[('u',)]", "[('u', ('i', 1.0))]", "[('u', [('i',)])]", "[('u', [('i', 'x')])]",
        "['u']", "[('u', [('i', 1.0, 2)])]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        PyObject *texts = PyDict_New();
        Py_ssize_t rows;
        PyObject *p = run(bad[i], texts, &rows);
        assert_null(p);
        assert_true(PyErr_ExceptionMatches(PyExc_TypeError));
        PyErr_Clear();
        Py_DECREF(texts);
    }
    /* not a list, not a dict */
    PyObject *out = PyObject_CallFunction(copy_rows, "y#y#sO", "m", (Py_ssize_t)1, "t",
                                          (Py_ssize_t)1, "lists", Py_None);
    assert_null(out);
    PyErr_Clear();
}

static void test_empty_list_gives_no_rows(void **state)
{
    (void)state;
    PyObject *texts = PyDict_New();
    Py_ssize_t rows = -1;
    PyObject *p = run("[]", texts, &rows);
    assert_non_null(p);
    assert_int_equal(rows, 0);
    assert_int_equal(PyBytes_GET_SIZE(p), 0);
    Py_DECREF(p);
    Py_DECREF(texts);
}

/* Ids C does not write itself get their text from uro_rec.ids.to_text: a binary that is not
 * UTF-8 (escaped bytes), one with a NUL, text that looks like \x-hex; plain ones stay plain. */
static void test_ids_that_are_not_plain_text_use_to_text(void **state)
{
    (void)state;
    PyObject *ids = PyImport_ImportModule("uro_rec.ids");
    assert_non_null(ids);
    PyObject *to_text = PyObject_GetAttrString(ids, "to_text");
    PyObject *texts = PyDict_New();
    PyObject *lists = PyRun_String(
        "[(b'\\xff\\xfe\\x00'.decode('utf-8', 'surrogateescape'), [('a\\x00b', 0.5),"
        " ('\\\\x41', 1.0), ('plain', 2.0), (7, 3.0)])]",
        Py_eval_input, PyEval_GetBuiltins(), PyEval_GetBuiltins());
    assert_non_null(lists);
    PyObject *out = PyObject_CallFunction(copy_rows, "y#y#OOO", "m\t", (Py_ssize_t)2, "\t7\n",
                                          (Py_ssize_t)3, lists, texts, to_text);
    if (!out)
        PyErr_Print();
    assert_non_null(out);
    const char want[] = "m\t\\\\xfffe00\t1\t\\\\x610062\t0.5\t7\n"
                        "m\t\\\\xfffe00\t2\t\\\\x5c783431\t1.0\t7\n"
                        "m\t\\\\xfffe00\t3\tplain\t2.0\t7\n"
                        "m\t\\\\xfffe00\t4\t7\t3.0\t7\n";
    PyObject *payload = PyTuple_GET_ITEM(out, 0);
    assert_int_equal(PyBytes_GET_SIZE(payload), (Py_ssize_t)sizeof want - 1);
    assert_memory_equal(PyBytes_AS_STRING(payload), want, sizeof want - 1);
    Py_DECREF(out);
    Py_DECREF(lists);
    Py_DECREF(texts);
    Py_DECREF(to_text);
    Py_DECREF(ids);
}

static int start_python(void **state)
{
    (void)state;
    Py_InitializeEx(0);
    PyRun_SimpleString("import sys; sys.path.insert(0, 'python')"); /* run from the top */
    PyObject *m = PyModule_New("_uro_port");
    if (!m || copytext_module_init(m) < 0)
        return -1;
    copy_rows = PyObject_GetAttrString(m, "copy_rows");
    Py_DECREF(m);
    return copy_rows ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_backslash_tab_newline_return),
        cmocka_unit_test(test_rows_of_every_id_kind),
        cmocka_unit_test(test_scores_read_back_exactly),
        cmocka_unit_test(test_cached_text_is_used),
        cmocka_unit_test(test_malformed_lists_raise_type_error),
        cmocka_unit_test(test_empty_list_gives_no_rows),
        cmocka_unit_test(test_ids_that_are_not_plain_text_use_to_text),
    };
    return cmocka_run_group_tests(tests, start_python, NULL);
}
