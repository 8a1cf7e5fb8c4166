/*
 * rank_py.c: rank.c's kernel as a Python function, rank_top, on numpy arrays through the
 * buffer protocol (no numpy headers: read-only memory maps work as they are).
 *
 *   rank_top(v32, v64, scale, bound_norm, users, ban_ptr, ban_idx, shared, n,
 *            out_idx, out_score, out_count) -> (widened, full)
 *
 * v32 float32 (N, d); v64 float64 (N, d) or None; scale float64 (N,) or None; users float64
 * (B, d); ban_ptr int64 (B + 1,), ban_idx int64 (sorted per user), shared int64 (sorted);
 * out_idx int64 (B, n), out_score float64 (B, n), out_count int64 (B,), written. The GIL is
 * released while it ranks (export's writer threads keep going).
 *
 * Part of the port's built-in _uro_port module (rank_module_init); built alone with
 * -DURO_RANK_EXTENSION it is the extension module _uro_rank, which the Python tests import.
 */
#include "rank_py.h"

#include "rank.h"

#include <string.h>

struct view {
    Py_buffer b;
    int held;
};

static void release(struct view *v, int n)
{
    for (int i = 0; i < n; i++)
        if (v[i].held)
            PyBuffer_Release(&v[i].b);
}

/* A C-contiguous buffer of ndim dimensions and items of kind ('f' float32, 'd' float64,
 * 'q' int64); None when allowed. 0 or -1 with TypeError/ValueError set. */
static int take(PyObject *o, struct view *v, char kind, int ndim, int writable, int none_ok,
                const char *what)
{
    v->held = 0;
    if (o == Py_None && none_ok)
        return 0;
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, &v->b, flags) < 0)
        return -1;
    v->held = 1;
    const char *f = v->b.format ? v->b.format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    int ok = kind == 'f' ? strcmp(f, "f") == 0
           : kind == 'd' ? strcmp(f, "d") == 0
           : (strcmp(f, "q") == 0 || strcmp(f, "l") == 0) && v->b.itemsize == 8;
    if (!ok || v->b.ndim != ndim) {
        PyErr_Format(PyExc_TypeError, "rank_top: %s must be a C-contiguous %d-d array of %s",
                     what, ndim, kind == 'f' ? "float32" : kind == 'd' ? "float64" : "int64");
        return -1;
    }
    return 0;
}

static int64_t dim(const struct view *v, int i)
{
    return v->held ? (int64_t)v->b.shape[i] : -1;
}

/* Shapes and the ban pointers checked: the kernel trusts them. */
static int check(struct view *v, int64_t n)
{
    int64_t items = dim(&v[0], 0), d = dim(&v[0], 1), users = dim(&v[2], 0);
    const int64_t *ptr = v[3].b.buf;
    int64_t nban = dim(&v[4], 0);
    int bad = (v[1].held && (dim(&v[1], 0) != items || dim(&v[1], 1) != d)) ||
              (v[8].held && dim(&v[8], 0) != items) || dim(&v[2], 1) != d ||
              dim(&v[3], 0) != users + 1 || dim(&v[6], 0) != users ||
              dim(&v[6], 1) != n || dim(&v[7], 0) != users || dim(&v[9], 0) != users ||
              dim(&v[9], 1) != n || n < 0 || d > 1 << 20;
    for (int64_t b = 0; !bad && b < users; b++)
        bad = ptr[0] != 0 || ptr[b] > ptr[b + 1] || ptr[b + 1] > nban;
    if (bad)
        PyErr_SetString(PyExc_ValueError, "rank_top: array shapes do not agree");
    return bad ? -1 : 0;
}

static PyObject *py_rank_top(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[12];
    double bound_norm;
    long long n;
    if (!PyArg_ParseTuple(args, "OOOdOOOOLOOO", &o[0], &o[1], &o[2], &bound_norm, &o[3], &o[4],
                          &o[5], &o[6], &n, &o[7], &o[8], &o[9]))
        return NULL;
    /* v: 0 v32, 1 v64, 2 users, 3 ban_ptr, 4 ban_idx, 5 shared, 6 out_idx, 7 out_count,
     *    8 scale, 9 out_score */
    struct view v[10] = {0};
    int rc = take(o[0], &v[0], 'f', 2, 0, 0, "v32") || take(o[1], &v[1], 'd', 2, 0, 1, "v64") ||
             take(o[2], &v[8], 'd', 1, 0, 1, "scale") || take(o[3], &v[2], 'd', 2, 0, 0, "users") ||
             take(o[4], &v[3], 'q', 1, 0, 0, "ban_ptr") ||
             take(o[5], &v[4], 'q', 1, 0, 0, "ban_idx") ||
             take(o[6], &v[5], 'q', 1, 0, 0, "shared") ||
             take(o[7], &v[6], 'q', 2, 1, 0, "out_idx") ||
             take(o[8], &v[9], 'd', 2, 1, 0, "out_score") ||
             take(o[9], &v[7], 'q', 1, 1, 0, "out_count") || check(v, (int64_t)n);
    if (rc) {
        release(v, 10);
        return NULL;
    }
    struct rank_items it = {v[0].b.buf, v[1].held ? v[1].b.buf : NULL,
                            v[8].held ? v[8].b.buf : NULL, dim(&v[0], 0), (int)dim(&v[0], 1),
                            bound_norm};
    struct rank_counts counts = {0};
    Py_BEGIN_ALLOW_THREADS
    rc = rank_top(&it, v[2].b.buf, dim(&v[2], 0), v[3].b.buf, v[4].b.buf, v[5].b.buf,
                  dim(&v[5], 0), (int64_t)n, v[6].b.buf, v[9].b.buf, v[7].b.buf, &counts);
    Py_END_ALLOW_THREADS
    release(v, 10);
    if (rc < 0)
        return PyErr_NoMemory();
    return Py_BuildValue("(LL)", (long long)counts.widened, (long long)counts.full);
}

static PyMethodDef rank_methods[] = {
    {"rank_top", py_rank_top, METH_VARARGS,
     "rank_top(v32, v64, scale, bound_norm, users, ban_ptr, ban_idx, shared, n, out_idx, "
     "out_score, out_count) -> (widened, full): the exact top n of each user (c_src/rank.c)."},
    {NULL, NULL, 0, NULL},
};

int rank_module_init(PyObject *module)
{
    return PyModule_AddFunctions(module, rank_methods);
}

#ifdef URO_RANK_EXTENSION
static struct PyModuleDef rank_module_def = {
    PyModuleDef_HEAD_INIT, "_uro_rank", "c_src/rank.c for tests outside the port.", -1,
    rank_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__uro_rank(void)
{
    return PyModule_Create(&rank_module_def);
}
#endif
