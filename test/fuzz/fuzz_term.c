/*
 * fuzz_term.c: the libFuzzer harness over the port's term codec (make fuzz, make test-fuzz;
 * docs/OPERATIONS.md, "Fuzzing and soak"). Built with clang, ASan and UBSan.
 *
 * Each input is one request frame, taken through what the port does with it and more:
 *   1. request_parse (inflate, validate, parse the call), as the port reads every frame;
 *   2. term_validate; for a valid term, term_skip must end where the walk ended;
 *   3. a valid term is decoded (term_to_py); what decodes is encoded again (py_to_term), and
 *      the new frame must validate and decode to an equal object: the round trip.
 * Any crash, sanitizer report or broken round trip aborts with the input saved.
 */
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"
#include "term.h"

#define FRAME_LIMIT (1u << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    Py_InitializeEx(0);
    PyObject *m = PyModule_New("_uro_port");
    if (!m || term_module_init(m) < 0) {
        fprintf(stderr, "fuzz_term: cannot set up the Atom type\n");
        abort();
    }
    PyDict_SetItemString(PyImport_GetModuleDict(), "_uro_port", m);
    Py_DECREF(m);
    ei_init();
    return 0;
}

static void die(const char *why)
{
    fprintf(stderr, "fuzz_term: %s\n", why);
    abort();
}

/* Encodes obj with a version byte, validates and decodes it again: must equal obj. */
static void round_trip(PyObject *obj)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    struct term_error err = {0};
    if (py_to_term(&x, obj, &err) < 0) {
        ei_x_free(&x);
        PyErr_Clear();
        return; /* an object outside the mapping (none should come from a decode) */
    }
    memset(&err, 0, sizeof err);
    if (term_validate(x.buff, (size_t)x.index, &err) < 0) {
        fprintf(stderr, "re-encoded term refused: %s\n", err.message);
        die("the encoder wrote a term the validator refuses");
    }
    int index = 1;
    PyObject *again = term_to_py(x.buff, &index, &err);
    if (!again)
        die("the re-encoded term does not decode");
    if (index != x.index)
        die("the re-encoded term decodes short of its end");
    int eq = PyObject_RichCompareBool(obj, again, Py_EQ);
    if (eq != 1)
        die("the round trip changed the value");
    Py_DECREF(again);
    ei_x_free(&x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *frame = (const char *)data;
    struct call call;
    request_parse(frame, size, FRAME_LIMIT, &call);
    request_release(&call);

    struct term_error err = {0};
    if (term_validate(frame, size, &err) < 0)
        return 0;
    int index = 1;
    if (term_skip(frame, size, &index) < 0)
        die("term_skip refuses a term term_validate accepted");
    index = 1;
    PyObject *obj = term_to_py(frame, &index, &err);
    if (!obj) {
        if (PyErr_Occurred())
            die("a refused decode left a Python exception set");
        return 0;
    }
    round_trip(obj);
    Py_DECREF(obj);
    if (PyErr_Occurred())
        die("a Python exception was left set");
    return 0;
}
