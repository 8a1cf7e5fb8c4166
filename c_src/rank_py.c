/*
 * rank_py.c: rank.c's kernel as a Python function, rank_top, on numpy arrays through the
 * buffer protocol (no numpy headers: read-only memory maps work as they are).
 *
 *   rank_top(v32, v64, scale, bound_norm, users, bans, shared, n, out_idx, out_score,
 *            out_count) -> (widened, full), or None
 *
 * v32 float32 (N, d); v64 float64 (N, d) or None; scale float64 (N,) or None; users float64
 * (B, d); bans a list of B sorted int64 arrays or None; shared int64 (sorted); out_idx int64
 * (B, n), out_score float64 (B, n), out_count int64 (B,), written. None (nothing written) when a
 * user's values could overflow float32 or are not finite: the caller ranks those in numpy. The
 * GIL is released while it ranks (export's writer threads keep going).
 *
 *   rank_one(v32, v64, scale, bound_norm, u, ban, shared, n, scores) -> (ids, exact, widened,
 *            full), or None
 *
 * One user, recommend's path: u float32 or float64 (d,), ban a sorted int64 array or None; the
 * inner ids come back as a list of ints and the exact scores as a list of floats (None unless
 * scores is true), so a call builds no array: at 10k items the arrays rank_top takes and gives
 * cost a quarter of what Python spends around the kernel.
 *
 * Part of the port's built-in _uro_port module (rank_module_init); built alone with
 * -DURO_RANK_EXTENSION it is the extension module _uro_rank, which the Python tests import.
 */
#include "rank_py.h"

#include "rank.h"

#include <math.h>
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

/* A C-contiguous 1-d vector of float32 or float64, as doubles in out (d of them). */
static int take_vector(PyObject *o, double *out, int64_t d)
{
    Py_buffer b;
    if (PyObject_GetBuffer(o, &b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = b.format ? b.format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    int f32 = strcmp(f, "f") == 0, f64 = strcmp(f, "d") == 0;
    int rc = -1;
    if (!(f32 || f64) || b.ndim != 1)
        PyErr_SetString(PyExc_TypeError, "rank_one: u must be a C-contiguous 1-d array of "
                                         "float32 or float64");
    else if (b.shape[0] != d)
        PyErr_SetString(PyExc_ValueError, "rank_one: array shapes do not agree");
    else
        rc = 0;
    for (int64_t i = 0; rc == 0 && i < d; i++)
        out[i] = f32 ? (double)((const float *)b.buf)[i] : ((const double *)b.buf)[i];
    PyBuffer_Release(&b);
    return rc;
}

static int64_t dim(const struct view *v, int i)
{
    return v->held ? (int64_t)v->b.shape[i] : -1;
}

/* Shapes checked: the kernel trusts them. */
static int check(struct view *v, int64_t n)
{
    int64_t items = dim(&v[0], 0), d = dim(&v[0], 1), users = dim(&v[2], 0);
    int bad = (v[1].held && (dim(&v[1], 0) != items || dim(&v[1], 1) != d)) ||
              (v[8].held && dim(&v[8], 0) != items) || dim(&v[2], 1) != d ||
              dim(&v[6], 0) != users || dim(&v[6], 1) != n || dim(&v[7], 0) != users ||
              dim(&v[9], 0) != users || dim(&v[9], 1) != n || n < 0 || d > 1 << 20;
    if (bad)
        PyErr_SetString(PyExc_ValueError, "rank_top: array shapes do not agree");
    return bad ? -1 : 0;
}

/* Each user's bans (a list of sorted int64 arrays or None) as one array and pointers. */
static int gather_bans(PyObject *list, int64_t users, int64_t **ptr, int64_t **idx)
{
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != users) {
        PyErr_SetString(PyExc_ValueError, "rank_top: bans must be a list, one entry a user");
        return -1;
    }
    struct view *v = PyMem_Calloc((size_t)users + 1, sizeof(*v));
    int64_t total = 0, b = 0;
    int rc = -1;
    if (!v)
        goto out;
    for (; b < users; b++) {
        if (take(PyList_GET_ITEM(list, b), &v[b], 'q', 1, 0, 1, "a ban list") < 0)
            goto out;
        total += dim(&v[b], 0) > 0 ? dim(&v[b], 0) : 0;
    }
    *ptr = PyMem_Malloc(sizeof(int64_t) * (size_t)(users + 1));
    *idx = PyMem_Malloc(sizeof(int64_t) * (size_t)(total ? total : 1));
    if (!*ptr || !*idx)
        goto out;
    (*ptr)[0] = 0;
    for (int64_t k = 0; k < users; k++) {
        int64_t len = v[k].held ? dim(&v[k], 0) : 0;
        if (len)
            memcpy(*idx + (*ptr)[k], v[k].b.buf, sizeof(int64_t) * (size_t)len);
        (*ptr)[k + 1] = (*ptr)[k] + len;
    }
    rc = 0;
out:
    if (v)
        release(v, (int)(b < users ? b + 1 : users));
    PyMem_Free(v);
    if (rc < 0 && !PyErr_Occurred())
        PyErr_NoMemory();
    return rc;
}

/* Whether every score of these users stays a finite float32: |u| and |u| |v_j| below 1e30. */
static int float32_safe(const double *u, int64_t users, int d, double bound_norm)
{
    if (!(bound_norm < 1e30))
        return 0;
    for (int64_t b = 0; b < users; b++) {
        double s = 0.0;
        for (int i = 0; i < d; i++)
            s += u[b * d + i] * u[b * d + i];
        double norm = sqrt(s);
        if (!(norm < 1e30 && norm * bound_norm < 1e30)) /* u in float32 stays finite too */
            return 0;
    }
    return 1;
}

static PyObject *py_rank_top(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[12];
    double bound_norm;
    long long n;
    if (!PyArg_ParseTuple(args, "OOOdOOOLOOO", &o[0], &o[1], &o[2], &bound_norm, &o[3], &o[4],
                          &o[6], &n, &o[7], &o[8], &o[9]))
        return NULL;
    /* v: 0 v32, 1 v64, 2 users, 5 shared, 6 out_idx, 7 out_count, 8 scale, 9 out_score */
    struct view v[10] = {0};
    int64_t *ban_ptr = NULL, *ban_idx = NULL;
    PyObject *result = NULL;
    int rc = take(o[0], &v[0], 'f', 2, 0, 0, "v32") || take(o[1], &v[1], 'd', 2, 0, 1, "v64") ||
             take(o[2], &v[8], 'd', 1, 0, 1, "scale") || take(o[3], &v[2], 'd', 2, 0, 0, "users") ||
             take(o[6], &v[5], 'q', 1, 0, 0, "shared") ||
             take(o[7], &v[6], 'q', 2, 1, 0, "out_idx") ||
             take(o[8], &v[9], 'd', 2, 1, 0, "out_score") ||
             take(o[9], &v[7], 'q', 1, 1, 0, "out_count") || check(v, (int64_t)n) ||
             gather_bans(o[4], dim(&v[2], 0), &ban_ptr, &ban_idx);
    if (rc)
        goto out;
    struct rank_items it = {v[0].b.buf, v[1].held ? v[1].b.buf : NULL,
                            v[8].held ? v[8].b.buf : NULL, dim(&v[0], 0), (int)dim(&v[0], 1),
                            bound_norm};
    if (!float32_safe(v[2].b.buf, dim(&v[2], 0), it.d, bound_norm)) {
        result = Py_NewRef(Py_None);
        goto out;
    }
    struct rank_counts counts = {0};
    Py_BEGIN_ALLOW_THREADS
    rc = rank_top(&it, v[2].b.buf, dim(&v[2], 0), ban_ptr, ban_idx, v[5].b.buf,
                  dim(&v[5], 0), (int64_t)n, v[6].b.buf, v[9].b.buf, v[7].b.buf, &counts);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        PyErr_NoMemory();
    else
        result = Py_BuildValue("(LL)", (long long)counts.widened, (long long)counts.full);
out:
    release(v, 10);
    PyMem_Free(ban_ptr);
    PyMem_Free(ban_idx);
    return result;
}

/* ids (and exact scores) of rank_one as lists. */
static PyObject *one_result(const int64_t *idx, const double *score, int64_t count, int scores,
                            const struct rank_counts *counts)
{
    PyObject *ids = PyList_New(count), *exact = scores ? PyList_New(count) : Py_NewRef(Py_None);
    for (int64_t i = 0; ids && exact && i < count; i++) {
        PyObject *id = PyLong_FromLongLong(idx[i]);
        PyObject *sc = scores ? PyFloat_FromDouble(score[i]) : NULL;
        if (!id || (scores && !sc)) {
            Py_XDECREF(id);
            Py_CLEAR(ids);
            break;
        }
        PyList_SET_ITEM(ids, i, id);
        if (scores)
            PyList_SET_ITEM(exact, i, sc);
    }
    PyObject *r = ids && exact ? Py_BuildValue("(OOLL)", ids, exact, (long long)counts->widened,
                                               (long long)counts->full)
                               : NULL;
    Py_XDECREF(ids);
    Py_XDECREF(exact);
    return r;
}

/* Shapes checked: the kernel trusts them. */
static int check_one(struct view *v, int64_t n)
{
    int64_t items = dim(&v[0], 0), d = dim(&v[0], 1);
    int bad = (v[1].held && (dim(&v[1], 0) != items || dim(&v[1], 1) != d)) ||
              (v[2].held && dim(&v[2], 0) != items) || n < 0 || d > 1 << 20;
    if (bad)
        PyErr_SetString(PyExc_ValueError, "rank_one: array shapes do not agree");
    return bad ? -1 : 0;
}

static PyObject *py_rank_one(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[6];
    double bound_norm;
    long long n;
    int scores;
    if (!PyArg_ParseTuple(args, "OOOdOOOLp", &o[0], &o[1], &o[2], &bound_norm, &o[3], &o[4],
                          &o[5], &n, &scores))
        return NULL;
    /* v: 0 v32, 1 v64, 2 scale, 3 ban, 4 shared */
    struct view v[5] = {0};
    double *u = NULL;
    int64_t *out_idx = NULL;
    double *out_score = NULL;
    PyObject *result = NULL;
    if (take(o[0], &v[0], 'f', 2, 0, 0, "v32") || take(o[1], &v[1], 'd', 2, 0, 1, "v64") ||
        take(o[2], &v[2], 'd', 1, 0, 1, "scale") || take(o[4], &v[3], 'q', 1, 0, 1, "ban") ||
        take(o[5], &v[4], 'q', 1, 0, 0, "shared") || check_one(v, (int64_t)n))
        goto out;
    struct rank_items it = {v[0].b.buf, v[1].held ? v[1].b.buf : NULL,
                            v[2].held ? v[2].b.buf : NULL, dim(&v[0], 0), (int)dim(&v[0], 1),
                            bound_norm};
    int64_t want = n < it.n ? (int64_t)n : it.n;
    u = PyMem_Malloc(sizeof(double) * (size_t)(it.d ? it.d : 1));
    out_idx = PyMem_Malloc(sizeof(int64_t) * (size_t)(want ? want : 1));
    out_score = PyMem_Malloc(sizeof(double) * (size_t)(want ? want : 1));
    if (!u || !out_idx || !out_score) {
        PyErr_NoMemory();
        goto out;
    }
    if (take_vector(o[3], u, it.d) < 0)
        goto out;
    if (!float32_safe(u, 1, it.d, bound_norm)) {
        result = Py_NewRef(Py_None);
        goto out;
    }
    static const int64_t no_bans[1];
    const int64_t *ban = v[3].held ? v[3].b.buf : no_bans;
    int64_t ban_ptr[2] = {0, v[3].held ? dim(&v[3], 0) : 0}, count = 0;
    struct rank_counts counts = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = rank_top(&it, u, 1, ban_ptr, ban, v[4].b.buf,
                  dim(&v[4], 0), want, out_idx, out_score, &count, &counts);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        PyErr_NoMemory();
    else
        result = one_result(out_idx, out_score, count, scores, &counts);
out:
    release(v, 5);
    PyMem_Free(u);
    PyMem_Free(out_idx);
    PyMem_Free(out_score);
    return result;
}

static PyMethodDef rank_methods[] = {
    {"rank_top", py_rank_top, METH_VARARGS,
     "rank_top(v32, v64, scale, bound_norm, users, bans, shared, n, out_idx, out_score, "
     "out_count) -> (widened, full) or None: the exact top n of each user (c_src/rank.c)."},
    {"rank_one", py_rank_one, METH_VARARGS,
     "rank_one(v32, v64, scale, bound_norm, u, ban, shared, n, scores) -> (ids, exact, "
     "widened, full) or None: the exact top n of one user, as lists (c_src/rank.c)."},
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
