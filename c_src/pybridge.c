/*
 * pybridge.c: the embedded interpreter (see pybridge.h).
 *
 * Python runs on this process's main thread, which holds the GIL while it serves a call (one
 * call at a time). Only the database gives it up: around a connect, a statement's run
 * (c_src/db_execute.c) and any wait for the server longer than 10 ms (c_src/db_wait.c), so that
 * an export's Python threads compute while the server writes, and the deadline watchdog
 * (deadline.c) is never shut out by a silent server.
 *
 * The interpreter is told that its executable is <venv>/bin/python; CPython's start-up then
 * reads <venv>/pyvenv.cfg and puts the virtualenv's site-packages on sys.path, exactly as if
 * that python had been run. The config is isolated so that PYTHONPATH or PYTHONHOME in uro's
 * environment cannot swap the libraries under us.
 */
#include "pybridge.h"

#include "copytext.h"
#include "db.h"
#include "deadline.h"
#include "frames.h"
#include "rank_py.h"
#include "term.h"

#include <stdio.h>
#include <string.h>

static PyObject *commands_module;
static PyObject *port_error_type;
static char kind_buf[64];

/* ---- the _uro_port module -------------------------------------------------------------- */

static int is_level(const char *level)
{
    return strcmp(level, "debug") == 0 || strcmp(level, "info") == 0 ||
           strcmp(level, "warning") == 0 || strcmp(level, "error") == 0;
}

static PyObject *port_log(PyObject *self, PyObject *args)
{
    (void)self;
    const char *level, *message;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "ss#", &level, &message, &len))
        return NULL;
    if (!is_level(level)) {
        PyErr_Format(PyExc_ValueError, "log level must be debug, info, warning or error, not %s",
                     level);
        return NULL;
    }
    frames_log(level, message, (size_t)len);
    Py_RETURN_NONE;
}

static PyObject *port_event(PyObject *self, PyObject *map)
{
    (void)self;
    if (!PyDict_Check(map)) {
        PyErr_SetString(PyExc_TypeError, "event takes a dict");
        return NULL;
    }
    struct term_error err = {0};
    if (frames_event(map, &err) < 0) {
        PyErr_SetString(PyExc_ValueError, err.message);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef port_methods[] = {
    {"log", port_log, METH_VARARGS, "log(level, message): send {log, Level, Message}."},
    {"event", port_event, METH_O, "event(dict): send {event, Ref, Map} for the running call."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef port_module_def = {
    PyModuleDef_HEAD_INIT, "_uro_port", "The port's side of the bridge.", -1, port_methods,
    NULL, NULL, NULL, NULL,
};

static PyObject *init_port_module(void)
{
    PyObject *m = PyModule_Create(&port_module_def);
    if (m && (term_module_init(m) < 0 || deadline_module_init(m) < 0 ||
              db_module_init(m) < 0 || copytext_module_init(m) < 0 ||
              rank_module_init(m) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* ---- start-up ------------------------------------------------------------------------------ */

static int set_error(char *why, size_t n, const char *what)
{
    snprintf(why, n, "%s", what);
    return -1;
}

/* Formats the pending Python exception into why (start-up failures go to --check and stderr). */
static int set_python_error(char *why, size_t n, const char *what)
{
    PyObject *detail = NULL;
    pybridge_take_error(&detail);
    PyObject *msg = detail && PyDict_Check(detail) ? PyDict_GetItemString(detail, "traceback") : NULL;
    snprintf(why, n, "%s: %s", what, msg && PyUnicode_Check(msg) ? PyUnicode_AsUTF8(msg) : "?");
    Py_XDECREF(detail);
    return -1;
}

static int init_interpreter(const struct pybridge_config *cfg, char *why, size_t n)
{
    char executable[4096];
    snprintf(executable, sizeof(executable), "%s/bin/python", cfg->venv);

    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 0; /* SIGTERM and SIGINT are the port's (main.c) */
    config.site_import = 1;
    config.parse_argv = 0;
    config.buffered_stdio = 0;
    PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, executable);
    if (!PyStatus_Exception(st))
        st = PyConfig_SetBytesString(&config, &config.executable, executable);
    if (!PyStatus_Exception(st)) {
        char *argv[] = {"uro_recommender", NULL};
        st = PyConfig_SetBytesArgv(&config, 1, argv);
    }
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
        return set_error(why, n, st.err_msg ? st.err_msg : "Py_InitializeFromConfig failed");
    return 0;
}

static int add_package_dir(const char *dir)
{
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    PyObject *entry = PyUnicode_DecodeFSDefault(dir);
    int rc = path && entry ? PyList_Insert(path, 0, entry) : -1;
    Py_XDECREF(entry);
    return rc;
}

static PyObject *call_in(PyObject *module, const char *fn, PyObject *args, PyObject *kw)
{
    PyObject *f = PyObject_GetAttrString(module, fn);
    if (!f)
        return NULL;
    PyObject *r = PyObject_Call(f, args, kw);
    Py_DECREF(f);
    return r;
}

static PyObject *call_module(const char *module, const char *fn, PyObject *args, PyObject *kw)
{
    PyObject *m = PyImport_ImportModule(module);
    PyObject *r = m ? call_in(m, fn, args, kw) : NULL;
    Py_XDECREF(m);
    return r;
}

int pybridge_start(const struct pybridge_config *cfg, char *why, size_t n)
{
    if (PyImport_AppendInittab("_uro_port", init_port_module) < 0)
        return set_error(why, n, "cannot register the _uro_port module");
    if (init_interpreter(cfg, why, n) < 0)
        return -1;
    /* Importing _uro_port creates the Atom type that term.c and error replies use. */
    PyObject *port_module = PyImport_ImportModule("_uro_port");
    if (!port_module)
        return set_error(why, n, "cannot import _uro_port");
    Py_DECREF(port_module);
    if (add_package_dir(cfg->python_dir) < 0)
        return set_python_error(why, n, "sys.path");

    PyObject *empty = PyTuple_New(0);
    PyObject *r = call_module("uro_rec.streams", "install", empty, NULL);
    if (!r) {
        Py_DECREF(empty);
        return set_python_error(why, n, "uro_rec.streams.install()");
    }
    Py_DECREF(r);

    commands_module = PyImport_ImportModule("uro_rec.commands");
    if (!commands_module) {
        Py_DECREF(empty);
        return set_python_error(why, n, "importing uro_rec");
    }
    PyObject *kw = Py_BuildValue("{s:s}", "model_dir", cfg->model_dir);
    r = kw ? call_in(commands_module, "configure", empty, kw) : NULL;
    Py_XDECREF(kw);
    Py_DECREF(empty);
    if (!r)
        return set_python_error(why, n, "uro_rec.commands.configure()");
    Py_DECREF(r);

    PyObject *errors = PyImport_ImportModule("uro_rec.errors");
    port_error_type = errors ? PyObject_GetAttrString(errors, "PortError") : NULL;
    Py_XDECREF(errors);
    if (!port_error_type)
        return set_python_error(why, n, "importing uro_rec");
    return 0;
}

/* ---- calls and errors ------------------------------------------------------------------- */

PyObject *pybridge_call(const char *module, const char *fn, PyObject *args)
{
    /* uro_rec.commands is the hot path: held since start-up. Others go through sys.modules. */
    if (strcmp(module, "uro_rec.commands") == 0)
        return call_in(commands_module, fn, args, NULL);
    return call_module(module, fn, args, NULL);
}

static PyObject *format_traceback(PyObject *exc)
{
    PyObject *tb_module = PyImport_ImportModule("traceback");
    if (!tb_module)
        return NULL;
    PyObject *lines = PyObject_CallMethod(tb_module, "format_exception", "O", exc);
    Py_DECREF(tb_module);
    if (!lines)
        return NULL;
    PyObject *sep = PyUnicode_FromString("");
    PyObject *text = sep ? PyUnicode_Join(sep, lines) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(lines);
    return text;
}

static PyObject *python_error_detail(PyObject *exc)
{
    PyObject *type = PyObject_GetAttrString((PyObject *)Py_TYPE(exc), "__qualname__");
    PyObject *message = PyObject_Str(exc);
    PyObject *traceback = format_traceback(exc);
    if (!traceback) {
        PyErr_Clear();
        traceback = PyUnicode_FromString("");
    }
    PyObject *detail = NULL;
    if (type && message && traceback) {
        detail = PyDict_New();
        PyObject *k_type = term_make_atom("type", 4);
        PyObject *k_message = term_make_atom("message", 7);
        PyObject *k_traceback = term_make_atom("traceback", 9);
        if (detail && k_type && k_message && k_traceback) {
            PyDict_SetItem(detail, k_type, type);
            PyDict_SetItem(detail, k_message, message);
            PyDict_SetItem(detail, k_traceback, traceback);
        }
        Py_XDECREF(k_type);
        Py_XDECREF(k_message);
        Py_XDECREF(k_traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(message);
    Py_XDECREF(traceback);
    PyErr_Clear();
    return detail;
}

/* A PortError's kind becomes an atom: only plain identifiers are accepted. */
static const char *port_error_kind(PyObject *exc)
{
    PyObject *kind = PyObject_GetAttrString(exc, "kind");
    const char *s = kind && PyUnicode_Check(kind) ? PyUnicode_AsUTF8(kind) : NULL;
    int ok = s && *s && strlen(s) < sizeof(kind_buf) && strspn(s, "abcdefghijklmnopqrstuvwxyz_") == strlen(s);
    if (ok)
        snprintf(kind_buf, sizeof(kind_buf), "%s", s);
    Py_XDECREF(kind);
    PyErr_Clear();
    return ok ? kind_buf : "internal";
}

const char *pybridge_take_error(PyObject **detail)
{
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc && tb)
        PyException_SetTraceback(exc, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    *detail = NULL;
    if (!exc)
        return "internal";
    const char *kind;
    if (port_error_type && PyObject_IsInstance(exc, port_error_type) == 1) {
        kind = port_error_kind(exc);
        *detail = PyObject_GetAttrString(exc, "detail");
        if (!*detail) {
            PyErr_Clear();
            *detail = PyObject_Str(exc);
        }
    } else {
        kind = "python";
        *detail = python_error_detail(exc);
    }
    Py_DECREF(exc);
    PyErr_Clear();
    return kind;
}
