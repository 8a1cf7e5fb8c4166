/*
 * pybridge.h: the embedded interpreter.
 *
 * Starts CPython on the project's virtualenv, provides the built-in module _uro_port (Atom,
 * log, event) to Python, forwards Python's stdout and stderr as log frames, calls functions of
 * uro_rec.commands, and turns a raised exception into the error term the caller gets.
 */
#ifndef URO_PYBRIDGE_H
#define URO_PYBRIDGE_H

#include "pytypes.h"

struct pybridge_config {
    const char *venv;        /* virtualenv directory: its bin/python names the interpreter */
    const char *python_dir;  /* the directory holding the uro_rec package */
    const char *model_dir;
};

/* 0, or -1 with a reason in why. */
int pybridge_start(const struct pybridge_config *cfg, char *why, size_t why_len);

/* Calls module.fn(*args), e.g. uro_rec.commands.recommend. New reference, or NULL with the
 * exception set. */
PyObject *pybridge_call(const char *module, const char *fn, PyObject *args);

/* Takes the pending exception and makes (kind, detail): a uro_rec.errors.PortError gives its
 * own kind and detail; anything else gives "python" and #{type, message, traceback}. The kind
 * points at static or interned storage valid until the next call. */
const char *pybridge_take_error(PyObject **detail);

#endif
