/*
 * pytypes.h: the Python C API, for a header that only names PyObject.
 *
 * Python.h must come first in every file that uses it, with PY_SSIZE_T_CLEAN defined, so it
 * comes through here. A file that converts terms includes term.h, which includes this.
 */
#ifndef URO_PYTYPES_H
#define URO_PYTYPES_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#endif
