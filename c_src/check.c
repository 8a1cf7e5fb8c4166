/*
 * check.c: the --check self-test (see check.h).
 *
 * Prints where each file was looked up and found (paths.c), starts the interpreter exactly as
 * the port does, then imports LibRecommender and every model family the port serves
 * (uro_rec.algorithms names them), checks that Python picked the same SQL files as the lookup,
 * and proves the model directory writable. It reports how long start-up took and the resident
 * memory afterwards, the figures docs/OPERATIONS.md quotes. It also owns say(), the human
 * output of --help, --version, --paths and --check.
 */
#define _GNU_SOURCE
#include "check.h"

#include "stats.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

/* --help, --version and --check are for a person at a terminal, never for a port: they write
 * to fd 1 with write(2) directly. In port mode nothing but erlcmd_send writes there. */
void say(const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0 && write(STDOUT_FILENO, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1) < 0)
        return;
}

static void report(int ok, const char *what, const char *detail)
{
    say("%s %-28s %s\n", ok ? "ok  " : "FAIL", what, detail ? detail : "");
    if (!ok)
        failures++;
}

static void report_python_failure(const char *what)
{
    PyObject *detail = NULL;
    pybridge_take_error(&detail);
    PyObject *msg = detail && PyDict_Check(detail) ? PyDict_GetItemString(detail, "message") : NULL;
    report(0, what, msg && PyUnicode_Check(msg) ? PyUnicode_AsUTF8(msg) : "failed");
    Py_XDECREF(detail);
}

/* Imports module and reports its __version__ (or attr when given). */
static PyObject *check_import(const char *module, const char *label)
{
    PyObject *m = PyImport_ImportModule(module);
    if (!m) {
        report_python_failure(label);
        return NULL;
    }
    PyObject *v = PyObject_GetAttrString(m, "__version__");
    if (!v)
        PyErr_Clear();
    report(1, label, v && PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : "");
    Py_XDECREF(v);
    return m;
}

/* The classes of libreco.algorithms the port trains, as uro_rec.algorithms.SUPPORTED names
 * them (the one list; docs/PROTOCOL.md shows it to people). A new reference to a list of
 * str, or NULL with the exception set. */
static PyObject *served_families(void)
{
    PyObject *m = PyImport_ImportModule("uro_rec.algorithms");
    PyObject *table = m ? PyObject_GetAttrString(m, "SUPPORTED") : NULL;
    PyObject *names = table ? PySequence_List(table) : NULL; /* a dict: its keys */
    Py_XDECREF(table);
    Py_XDECREF(m);
    return names;
}

static void check_families(void)
{
    PyObject *algorithms = check_import("libreco.algorithms", "libreco.algorithms");
    if (!algorithms)
        return;
    PyObject *families = served_families();
    if (!families)
        report_python_failure("uro_rec.algorithms.SUPPORTED");
    for (Py_ssize_t i = 0; families && i < PyList_GET_SIZE(families); i++) {
        PyObject *name = PyList_GET_ITEM(families, i);
        PyObject *cls = PyObject_GetAttr(algorithms, name);
        const char *family = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
        if (cls)
            report(1, family ? family : "?", "importable");
        else
            report_python_failure(family ? family : "?");
        Py_XDECREF(cls);
    }
    Py_XDECREF(families);
    Py_DECREF(algorithms);
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static void check_model_dir(const char *dir)
{
    char probe[4200];
    snprintf(probe, sizeof(probe), "%s/.uro_rec_check.%d", dir, (int)getpid());
    FILE *f = mkdir_p(dir) == 0 ? fopen(probe, "w") : NULL;
    int ok = f && fputs("ok\n", f) >= 0;
    if (f)
        ok = (fclose(f) == 0) && ok;
    unlink(probe);
    report(ok, "model directory writable", dir);
}

/* apply_schema's default directory (python/uro_rec/schema.py's own rule) must be the lookup's. */
static void check_sql_dir(const char *expected)
{
    PyObject *schema = PyImport_ImportModule("uro_rec.schema");
    PyObject *dir = schema ? PyObject_GetAttrString(schema, "SCHEMA_DIR") : NULL;
    Py_XDECREF(schema);
    if (!dir || !PyUnicode_Check(dir)) {
        Py_XDECREF(dir);
        report_python_failure("SQL files (apply_schema)");
        return;
    }
    char a[PATH_MAX], b[PATH_MAX];
    const char *got = PyUnicode_AsUTF8(dir);
    int same = got && expected && realpath(got, a) && realpath(expected, b) && !strcmp(a, b);
    report(same, "SQL files (apply_schema)", same ? expected : got);
    if (!same)
        say("     the lookup above found %s\n", expected ? expected : "none");
    Py_DECREF(dir);
}

int check_main(const struct pybridge_config *py, const struct paths *paths)
{
    say("uro_recommender %s (protocol %d)\n", URO_REC_VERSION, URO_REC_PROTOCOL);
    paths_print(paths, STDOUT_FILENO);
    say("  model dir   %s\n\n", py->model_dir);
    stats_init();
    long rss_before = stats_resident_kib();
    uint64_t t0 = stats_now_us();
    char why[4096];
    if (paths_explain_missing(paths, why, sizeof(why)) < 0 ||
        pybridge_start(py, why, sizeof(why)) < 0) {
        report(0, "interpreter", why);
        return 1;
    }
    uint64_t t_python = stats_now_us();
    char line[256];
    snprintf(line, sizeof(line), "%s", Py_GetVersion());
    *strchrnul(line, '\n') = '\0';
    report(1, "interpreter", line);
    say("     start-up (interpreter + uro_rec) %llu ms, resident %ld KiB\n",
        (unsigned long long)(t_python - t0) / 1000, stats_resident_kib());

    PyObject *m = check_import("libreco", "LibRecommender");
    Py_XDECREF(m);
    Py_XDECREF(check_import("tensorflow", "tensorflow"));
    Py_XDECREF(check_import("torch", "torch"));
    Py_XDECREF(check_import("gensim", "gensim"));
    Py_XDECREF(check_import("recfarm", "recfarm"));
    check_families();
    check_sql_dir(paths_get(paths, PATHS_SQL_DIR));
    check_model_dir(py->model_dir);
    uint64_t t_all = stats_now_us();
    say("\nstart-up with every model family imported: %llu ms; resident %ld KiB (was %ld KiB "
        "before Python)\n",
        (unsigned long long)(t_all - t0) / 1000, stats_resident_kib(), rss_before);
    say("%s\n", failures ? "CHECK FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
