/*
 * test_term.c: cmocka tests for the term codec (c_src/term.c).
 *
 * Every row of the type table in docs/PROTOCOL.md both ways, bignums past 2^64, UTF-8 and
 * Latin-1 atoms, the refusals, the depth limit, and a corpus of malformed frames (every
 * truncation, bad version bytes, bad tags, lying lengths, random mutations): each must give
 * an error or a value, never a crash; and what binary_to_term refuses (measured on OTP 25),
 * which the validator must refuse too. Run plain and under AddressSanitizer + UBSan.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"
#include "term.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static ei_x_buff x;

static void begin(void)
{
    ei_x_free(&x);
    ei_x_new_with_version(&x);
}

/* Validates x and decodes it; returns the object (or NULL with err). */
static PyObject *decode_x(struct term_error *err)
{
    memset(err, 0, sizeof(*err));
    if (term_validate(x.buff, (size_t)x.index, err) < 0)
        return NULL;
    int index = 1;
    PyObject *obj = term_to_py(x.buff, &index, err);
    if (obj)
        assert_int_equal(index, x.index);
    return obj;
}

static PyObject *decode_ok(void)
{
    struct term_error err;
    PyObject *obj = decode_x(&err);
    if (!obj)
        fail_msg("decode failed: %s %s", err.kind, err.message);
    return obj;
}

static void assert_refused(const char *kind)
{
    struct term_error err;
    PyObject *obj = decode_x(&err);
    assert_null(obj);
    assert_string_equal(err.kind, kind);
    assert_false(PyErr_Occurred());
}

/* Encodes obj into a fresh buffer with a version byte; steals obj. */
static void encode_to_x(PyObject *obj)
{
    assert_non_null(obj);
    begin();
    struct term_error err = {0};
    if (py_to_term(&x, obj, &err) < 0)
        fail_msg("encode failed: %s", err.message);
    Py_DECREF(obj);
}

static PyObject *eval(const char *expr)
{
    PyObject *main = PyImport_AddModule("__main__");
    PyObject *globals = PyModule_GetDict(main);
    PyObject *r = PyRun_String(expr, Py_eval_input, globals, globals);
    if (!r)
        PyErr_Print();
    assert_non_null(r);
    return r;
}

static void assert_py_equal(PyObject *got, const char *expected_expr)
{
    PyObject *want = eval(expected_expr);
    int eq = PyObject_RichCompareBool(got, want, Py_EQ);
    int same_type = Py_TYPE(got) == Py_TYPE(want);
    if (eq != 1 || !same_type) {
        PyObject *r = PyObject_Repr(got);
        fail_msg("got %s (%s), want %s", PyUnicode_AsUTF8(r), Py_TYPE(got)->tp_name,
                 expected_expr);
    }
    Py_DECREF(want);
    Py_DECREF(got);
}

/* Python -> term -> Python must give an equal object of the same type. */
static void assert_round_trip(const char *expr)
{
    encode_to_x(eval(expr));
    assert_py_equal(decode_ok(), expr);
}

/* ---- Erlang -> Python ---------------------------------------------------------------------- */

static void test_integers_decode(void **state)
{
    (void)state;
    long long cases[] = {0, 1, 255, 256, -1, 2147483647LL, -2147483648LL, 2147483648LL,
                         9223372036854775807LL, (-9223372036854775807LL - 1)};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        begin();
        ei_x_encode_longlong(&x, cases[i]);
        char expr[64];
        snprintf(expr, sizeof(expr), "%lld", cases[i]);
        if (cases[i] == (-9223372036854775807LL - 1))
            snprintf(expr, sizeof(expr), "-9223372036854775808");
        assert_py_equal(decode_ok(), expr);
    }
    begin();
    ei_x_encode_ulonglong(&x, 18446744073709551615ULL);
    assert_py_equal(decode_ok(), "18446744073709551615");
}

static void test_bignums_past_2_64_both_ways(void **state)
{
    (void)state;
    assert_round_trip("2**64 + 1");
    assert_round_trip("-(2**64 + 1)");
    assert_round_trip("2**70");
    assert_round_trip("-(2**200) + 12345");
    assert_round_trip("2**2100 + 7"); /* LARGE_BIG_EXT: more than 255 bytes */
    assert_round_trip("-(2**2100)");
    /* SMALL_BIG_EXT for 2^64 by hand: n=9, sign 0, digits little-endian. */
    begin();
    const char big[] = {ERL_SMALL_BIG_EXT, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    ei_x_append_buf(&x, big, sizeof(big));
    assert_py_equal(decode_ok(), "2**64");
    /* The encoder writes exactly that. */
    encode_to_x(eval("2**64"));
    assert_int_equal(x.index, 1 + (int)sizeof(big));
    assert_memory_equal(x.buff + 1, big, sizeof(big));
}

static void test_floats_and_non_finite(void **state)
{
    (void)state;
    assert_round_trip("1.5");
    assert_round_trip("-0.0");
    assert_round_trip("1e308");
    const char *specials[][2] = {{"float('nan')", "nan"}, {"float('inf')", "infinity"},
                                 {"float('-inf')", "neg_infinity"}};
    for (int i = 0; i < 3; i++) {
        encode_to_x(eval(specials[i][0]));
        int index = 1;
        char atom[MAXATOMLEN];
        assert_int_equal(ei_decode_atom(x.buff, &index, atom), 0);
        assert_string_equal(atom, specials[i][1]);
    }
    /* The old FLOAT_EXT (31-byte text) still decodes. */
    begin();
    char old[32] = {ERL_FLOAT_EXT};
    snprintf(old + 1, 31, "%.20e", 2.5);
    ei_x_append_buf(&x, old, 32);
    assert_py_equal(decode_ok(), "2.5");
}

static void test_special_atoms(void **state)
{
    (void)state;
    const char *atoms[][2] = {{"true", "True"}, {"false", "False"}, {"nil", "None"},
                              {"undefined", "None"}};
    for (int i = 0; i < 4; i++) {
        begin();
        ei_x_encode_atom(&x, atoms[i][0]);
        PyObject *got = decode_ok();
        assert_true(got == eval(atoms[i][1]));
        Py_DECREF(got);
    }
    encode_to_x(eval("None"));
    int index = 1;
    char atom[MAXATOMLEN];
    ei_decode_atom(x.buff, &index, atom);
    assert_string_equal(atom, "nil");
    encode_to_x(eval("True"));
    index = 1;
    ei_decode_atom(x.buff, &index, atom);
    assert_string_equal(atom, "true");
}

static void test_atoms_become_atom_str_and_back(void **state)
{
    (void)state;
    begin();
    ei_x_encode_atom_len_as(&x, "h\xc3\xa9llo", 6, ERLANG_UTF8, ERLANG_UTF8);
    assert_int_equal((unsigned char)x.buff[1], ERL_SMALL_ATOM_UTF8_EXT);
    PyObject *got = decode_ok();
    assert_true(Py_IS_TYPE(got, (PyTypeObject *)term_atom_type()));
    assert_true(PyUnicode_Check(got));
    assert_string_equal(PyUnicode_AsUTF8(got), "h\xc3\xa9llo");
    /* and back: an Atom encodes as an atom */
    encode_to_x(got);
    assert_int_equal((unsigned char)x.buff[1], ERL_SMALL_ATOM_UTF8_EXT);

    /* A Latin-1 ATOM_EXT (what old nodes send) decodes to the same text. */
    begin();
    const char latin1[] = {ERL_ATOM_EXT, 0, 5, 'h', (char)0xe9, 'l', 'l', 'o'};
    ei_x_append_buf(&x, latin1, sizeof(latin1));
    got = decode_ok();
    assert_string_equal(PyUnicode_AsUTF8(got), "h\xc3\xa9llo");
    Py_DECREF(got);

    /* A plain str is a binary, not an atom. */
    encode_to_x(eval("'ok'"));
    assert_int_equal((unsigned char)x.buff[1], ERL_BINARY_EXT);
    /* Atoms of 255 characters are the most the BEAM takes. */
    encode_to_x(eval("__import__('_uro_port').Atom('a' * 255)"));
    begin();
    struct term_error err = {0};
    PyObject *long_atom = eval("__import__('_uro_port').Atom('a' * 256)");
    assert_int_equal(py_to_term(&x, long_atom, &err), -1);
    assert_string_equal(err.kind, "internal");
    Py_DECREF(long_atom);
}

static void test_binaries_text_and_bytes(void **state)
{
    (void)state;
    begin();
    ei_x_encode_binary(&x, "caf\xc3\xa9", 5);
    assert_py_equal(decode_ok(), "'caf\\u00e9'");
    begin();
    ei_x_encode_binary(&x, "\xff\xfe", 2);
    assert_py_equal(decode_ok(), "b'\\xff\\xfe'");
    begin();
    ei_x_encode_binary(&x, "", 0);
    assert_py_equal(decode_ok(), "''");
    assert_round_trip("'uuid-5f0c6c2e-8a3b-4c1e-9d2f-1a2b3c4d5e6f'");
    assert_round_trip("b'\\x00\\xff'");
    encode_to_x(eval("bytearray(b'ab')"));
    assert_int_equal((unsigned char)x.buff[1], ERL_BINARY_EXT);
    /* a str that is not valid UTF-8 (a lone surrogate) is refused, not mangled */
    begin();
    struct term_error err = {0};
    PyObject *bad = eval("'\\ud800'");
    assert_int_equal(py_to_term(&x, bad, &err), -1);
    Py_DECREF(bad);
}

static void test_containers(void **state)
{
    (void)state;
    assert_round_trip("[1, [2, [3, []]], (4, 'five', b'\\xff'), {'k': [1.0]}]");
    assert_round_trip("()");
    assert_round_trip("[]");
    assert_round_trip("{}");
    assert_round_trip("{1: 'one', (2, 3): [4], 'x': {'y': None}}");
    assert_round_trip("tuple(range(300))"); /* LARGE_TUPLE_EXT */
    assert_round_trip("list(range(70000))");
    /* a charlist (STRING_EXT) is a list of integers */
    begin();
    ei_x_encode_string(&x, "hi");
    assert_py_equal(decode_ok(), "[104, 105]");
}

static void test_map_with_unhashable_key_is_badarg(void **state)
{
    (void)state;
    begin();
    ei_x_encode_map_header(&x, 1);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 1);
    ei_x_encode_empty_list(&x);
    ei_x_encode_atom(&x, "v");
    assert_refused("badarg");
}

static void test_numpy_scalars_and_arrays(void **state)
{
    (void)state;
    PyObject *np = PyImport_ImportModule("numpy");
    if (!np) {
        PyErr_Clear();
        skip();
    }
    Py_DECREF(np);
    encode_to_x(eval("__import__('numpy').int64(7)"));
    assert_py_equal(decode_ok(), "7");
    encode_to_x(eval("__import__('numpy').float32(0.5)"));
    assert_py_equal(decode_ok(), "0.5");
    encode_to_x(eval("__import__('numpy').bool_(True)"));
    assert_py_equal(decode_ok(), "True");
    encode_to_x(eval("__import__('numpy').arange(6).reshape(2, 3)"));
    assert_py_equal(decode_ok(), "[[0, 1, 2], [3, 4, 5]]");
    encode_to_x(eval("__import__('numpy').array([1.5, float('nan')])"));
    int index = 1, arity;
    assert_int_equal(ei_decode_list_header(x.buff, &index, &arity), 0);
    assert_int_equal(arity, 2);
}

static void test_unencodable_object_is_internal_error(void **state)
{
    (void)state;
    begin();
    struct term_error err = {0};
    PyObject *obj = eval("{1, 2}");
    assert_int_equal(py_to_term(&x, obj, &err), -1);
    assert_string_equal(err.kind, "internal");
    assert_non_null(strstr(err.message, "set"));
    Py_DECREF(obj);
}

/* ---- refusals --------------------------------------------------------------------------- */

static void test_pids_ports_refs_funs_are_refused(void **state)
{
    (void)state;
    erlang_pid pid = {.num = 1, .serial = 2, .creation = 3};
    strcpy(pid.node, "node@host");
    begin();
    ei_x_encode_pid(&x, &pid);
    assert_refused("badarg");

    erlang_port port = {.id = 5, .creation = 3};
    strcpy(port.node, "node@host");
    begin();
    ei_x_encode_port(&x, &port);
    assert_refused("badarg");

    erlang_ref ref = {.len = 3, .n = {1, 2, 3}, .creation = 4};
    strcpy(ref.node, "node@host");
    begin();
    ei_x_encode_ref(&x, &ref);
    assert_refused("badarg");

    /* fun erlang:abs/1 as EXPORT_EXT */
    begin();
    const char export_fun[] = {ERL_EXPORT_EXT, ERL_SMALL_ATOM_UTF8_EXT, 6, 'e', 'r', 'l', 'a',
                               'n', 'g', ERL_SMALL_ATOM_UTF8_EXT, 3, 'a', 'b', 's',
                               ERL_SMALL_INTEGER_EXT, 1};
    ei_x_append_buf(&x, export_fun, sizeof(export_fun));
    assert_refused("badarg");
}

static void test_improper_list_and_bitstring_are_refused(void **state)
{
    (void)state;
    begin();
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 1);
    ei_x_encode_long(&x, 2); /* tail [1|2] */
    assert_refused("badarg");

    begin();
    const char bits[] = {ERL_BIT_BINARY_EXT, 0, 0, 0, 1, 3, (char)0xe0};
    ei_x_append_buf(&x, bits, sizeof(bits));
    assert_refused("badarg");
}

static void nest_lists(int depth)
{
    begin();
    for (int i = 0; i < depth; i++)
        ei_x_encode_list_header(&x, 1);
    ei_x_encode_empty_list(&x);
    for (int i = 0; i < depth; i++)
        ei_x_encode_empty_list(&x);
}

static void test_depth_limit_both_ways(void **state)
{
    (void)state;
    nest_lists(TERM_MAX_DEPTH - 1);
    Py_DECREF(decode_ok());
    nest_lists(TERM_MAX_DEPTH + 1);
    assert_refused("badarg");
    nest_lists(100000); /* would overflow a naive recursive decoder's stack */
    assert_refused("badarg");

    PyObject *deep = eval("(lambda: [l := [], [l := [l] for _ in range(1000)], l][-1])()");
    begin();
    struct term_error err = {0};
    assert_int_equal(py_to_term(&x, deep, &err), -1);
    assert_string_equal(err.kind, "internal");
    Py_DECREF(deep);
    /* a list that contains itself ends at the limit too */
    PyObject *loop = eval("(lambda l: (l.append(l), l)[1])([])");
    begin();
    assert_int_equal(py_to_term(&x, loop, &err), -1);
    PyObject_CallMethod(loop, "clear", NULL);
    Py_DECREF(loop);
}

/* ---- malformed frames -------------------------------------------------------------------- */

/* A frame with one of everything, including a Ref-like reference and a pid. */
static void build_rich_frame(void)
{
    erlang_ref ref = {.len = 3, .n = {1, 2, 3}, .creation = 4};
    strcpy(ref.node, "nonode@nohost");
    begin();
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "call");
    ei_x_encode_ref(&x, &ref);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "echo");
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_binary(&x, "key", 3);
    ei_x_encode_list_header(&x, 3);
    ei_x_encode_double(&x, 1.25);
    ei_x_encode_string(&x, "abc");
    ei_x_encode_ulonglong(&x, 18446744073709551615ULL);
    ei_x_encode_empty_list(&x);
    ei_x_encode_atom(&x, "t");
    ei_x_encode_tuple_header(&x, 0);
    ei_x_encode_map_header(&x, 0);
}

static void test_every_truncation_is_an_error(void **state)
{
    (void)state;
    build_rich_frame();
    struct term_error err;
    assert_int_equal(term_validate(x.buff, (size_t)x.index, &err), 0);
    for (int n = 0; n < x.index; n++) {
        char *copy = malloc((size_t)n + 1); /* exact size: ASan sees any overread */
        memcpy(copy, x.buff, (size_t)n);
        memset(&err, 0, sizeof(err));
        assert_int_equal(term_validate(copy, (size_t)n, &err), -1);
        assert_string_equal(err.kind, "bad_frame");
        free(copy);
    }
}

static void expect_bad_frame(const char *bytes, size_t n)
{
    char *copy = malloc(n ? n : 1);
    memcpy(copy, bytes, n);
    struct term_error err = {0};
    if (term_validate(copy, n, &err) == 0)
        fail_msg("accepted a malformed frame of %zu bytes starting %02x %02x", n,
                 n > 1 ? (unsigned char)bytes[1] : 0, n > 2 ? (unsigned char)bytes[2] : 0);
    assert_non_null(err.kind);
    free(copy);
}

static void test_malformed_corpus(void **state)
{
    (void)state;
    /* wrong version byte, empty frame */
    expect_bad_frame("\x82\x61\x01", 3);
    expect_bad_frame("", 0);
    /* unknown tags, the compressed-term tag, the atom-cache tag */
    expect_bad_frame("\x83\x01", 2);
    expect_bad_frame("\x83\x50\x00\x00\x00\x10xxxx", 10);
    expect_bad_frame("\x83\x52\x00", 3);
    /* lying lengths: list of 2^32-1 elements, binary longer than the frame, atom past end */
    expect_bad_frame("\x83\x6c\xff\xff\xff\xff\x6a", 7);
    expect_bad_frame("\x83\x6d\x00\x00\x10\x00" "abc", 9);
    expect_bad_frame("\x83\x77\xff" "ab", 5);
    expect_bad_frame("\x83\x74\x7f\xff\xff\xff\x61\x01", 8);
    expect_bad_frame("\x83\x6f\xff\xff\xff\xff\x00", 7);
    expect_bad_frame("\x83\x6b\x00\x09" "ab", 6);
    /* a reference with a silly word count, a fun whose size lies */
    expect_bad_frame("\x83\x5a\x00\x40\x77\x01" "a", 7);
    expect_bad_frame("\x83\x70\x00\x00\x00\x02", 6);
    expect_bad_frame("\x83\x70\xff\xff\xff\xff", 6);
    expect_bad_frame("\x83\x70\x00\x00\x00\x04", 6);
    /* a tuple with a non-atom where an atom must be (pid node) */
    expect_bad_frame("\x83\x58\x61\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 16);
}

static void test_random_mutations_never_crash(void **state)
{
    (void)state;
    build_rich_frame();
    size_t n = (size_t)x.index;
    char *orig = malloc(n);
    memcpy(orig, x.buff, n);
    srand(42);
    int accepted = 0;
    for (int round = 0; round < 20000; round++) {
        char *copy = malloc(n);
        memcpy(copy, orig, n);
        int flips = 1 + rand() % 3;
        for (int f = 0; f < flips; f++)
            copy[rand() % n] = (char)(rand() & 0xff);
        struct term_error err = {0};
        if (term_validate(copy, n, &err) == 0) {
            accepted++;
            int index = 1;
            PyObject *obj = term_to_py(copy, &index, &err);
            Py_XDECREF(obj);
            assert_false(PyErr_Occurred());
        }
        free(copy);
    }
    free(orig);
    assert_true(accepted > 0); /* some mutations stay valid terms: the decoder saw them */
}

static void test_find_call_ref_of_too_deep_call(void **state)
{
    (void)state;
    begin();
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "call");
    ei_x_encode_long(&x, 77);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "echo");
    for (int i = 0; i < 300; i++)
        ei_x_encode_list_header(&x, 1);
    ei_x_encode_empty_list(&x);
    for (int i = 0; i < 300; i++)
        ei_x_encode_empty_list(&x);
    struct term_error err = {0};
    assert_int_equal(term_validate(x.buff, (size_t)x.index, &err), -1);
    assert_string_equal(err.kind, "badarg");
    const char *ref;
    int ref_len;
    assert_int_equal(term_find_call_ref(x.buff, (size_t)x.index, &ref, &ref_len), 0);
    assert_int_equal(ref_len, 2); /* SMALL_INTEGER_EXT 77 */
    assert_int_equal((unsigned char)ref[1], 77);
}

/* ---- what binary_to_term refuses ------------------------------------------------------------
 * Each case below was run through binary_to_term on the OTP of this machine (25): the
 * validator must give the same verdict, because a Ref goes back byte for byte and a reply
 * the client cannot decode crashes it. B(...) builds the bytes after the version byte. */

struct verdict {
    const char *what;
    const char *bytes;
    size_t len;
    int beam_accepts;
};

#define B(lit) lit, sizeof(lit) - 1
#define NODE "\x77\x0d" "nonode@nohost"
#define XNODE "\x77\x03" "x@y"

static const struct verdict verdicts[] = {
    /* atoms: strict UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF), <= 255
     * characters; Latin-1 atoms take any byte */
    {"utf8 atom C0 80", B("\x77\x02\xc0\x80"), 0},
    {"utf8 atom surrogate", B("\x77\x03\xed\xa0\x80"), 0},
    {"utf8 atom past 10FFFF", B("\x77\x04\xf4\x90\x80\x80"), 0},
    {"utf8 atom overlong 3 bytes", B("\x77\x03\xe0\x80\x80"), 0},
    {"utf8 atom cut in a character", B("\x77\x01\xc3"), 0},
    {"utf8 atom 4-byte character", B("\x77\x04\xf0\x9f\x98\x80"), 1},
    {"utf8 atom with NUL", B("\x77\x01\x00"), 1},
    {"latin1 atom high bytes", B("\x64\x00\x02\xe9\xff"), 1},
    {"small latin1 atom high bytes", B("\x73\x02\xe9\xff"), 1},
    /* references: old creations fit 2 bits; the first word 18 bits; at most 5 words, 3 for
     * the local node (nonode@nohost, creation 0), which also needs at least one */
    {"newer ref local 3 words", B("\x5a\x00\x03" NODE "\0\0\0\0" "\0\0\0\1\0\0\0\2\0\0\0\3"), 1},
    {"newer ref local 4 words", B("\x5a\x00\x04" NODE "\0\0\0\0" "\0\0\0\1\0\0\0\2\0\0\0\3\0\0\0\4"), 0},
    {"newer ref local 0 words", B("\x5a\x00\x00" NODE "\0\0\0\0"), 0},
    {"newer ref local first word 2^18", B("\x5a\x00\x01" NODE "\0\0\0\0" "\0\4\0\0"), 0},
    {"newer ref remote 5 words", B("\x5a\x00\x05" XNODE "\0\0\0\5" "\0\0\0\1\0\0\0\2\0\0\0\3\0\0\0\4\0\0\0\5"), 1},
    {"newer ref remote 6 words", B("\x5a\x00\x06" XNODE "\0\0\0\5" "\0\0\0\1\0\0\0\2\0\0\0\3\0\0\0\4\0\0\0\5\0\0\0\6"), 0},
    {"newer ref remote first word 2^18", B("\x5a\x00\x01" XNODE "\0\0\0\5" "\0\4\0\0"), 1},
    {"new ref creation 4", B("\x72\x00\x01" XNODE "\4" "\0\0\0\1"), 0},
    {"new ref remote first word 2^18", B("\x72\x00\x01" XNODE "\3" "\0\4\0\0"), 0},
    {"new ref local 0 words", B("\x72\x00\x00" NODE "\0"), 1},
    {"reference_ext id 2^18", B("\x65" XNODE "\0\4\0\0" "\1"), 0},
    /* pids and ports: numbers checked for the local node only */
    {"new pid local id 2^15", B("\x58" NODE "\0\0\x80\0" "\0\0\0\0" "\0\0\0\0"), 0},
    {"new pid local serial 2^13", B("\x58" NODE "\0\0\0\1" "\0\0\x20\0" "\0\0\0\0"), 0},
    {"new pid remote id 2^32-1", B("\x58" XNODE "\xff\xff\xff\xff" "\0\0\0\0" "\0\0\0\0"), 1},
    {"pid_ext creation 4", B("\x67" XNODE "\0\0\0\1" "\0\0\0\0" "\4"), 0},
    {"port_ext local 2^28", B("\x66" NODE "\x10\0\0\0" "\0"), 0},
    {"v4 port local 2^32", B("\x78" NODE "\0\0\0\1\0\0\0\0" "\0\0\0\0"), 0},
    {"v4 port remote 2^62", B("\x78" XNODE "\x40\0\0\0\0\0\0\0" "\0\0\0\5"), 1},
    {"pid with an integer node", B("\x58\x61\x01" "\0\0\0\1" "\0\0\0\0" "\0\0\0\0"), 0},
    /* floats: no NaN or infinities; FLOAT_EXT text as erts reads it */
    {"NaN", B("\x46\x7f\xf8\0\0\0\0\0\0"), 0},
    {"infinity", B("\x46\x7f\xf0\0\0\0\0\0\0"), 0},
    {"-0.0", B("\x46\x80\0\0\0\0\0\0\0"), 1},
    {"float_ext 1,5", B("\x63" "1,5" "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"), 1},
    {"float_ext no NUL", B("\x63" "1.000000000000000000000000000000"), 0},
    {"float_ext 1e999", B("\x63" "1.0e999" "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"), 0},
    {"float_ext .5", B("\x63" ".5" "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"), 0},
    {"float_ext 1.5x", B("\x63" "1.5x" "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"), 0},
    /* bitstrings: Bits in 1..8, and 0 exactly when there is no byte */
    {"bitstring 0 bits in 1 byte", B("\x4d\0\0\0\1" "\0" "\xff"), 0},
    {"bitstring 9 bits", B("\x4d\0\0\0\1" "\x09" "\xff"), 0},
    {"bitstring 1 bit, no byte", B("\x4d\0\0\0\0" "\x01"), 0},
    {"bitstring 3 bits", B("\x4d\0\0\0\1" "\x03" "\xff"), 1},
    {"bitstring empty", B("\x4d\0\0\0\0" "\0"), 1},
    /* bignums: at most 4194296 bytes */
    {"large big of 2^22 bytes (only the header)", B("\x6f\0\x40\0\0" "\0"), 0},
    {"small big, sign byte 2", B("\x6e\x01\x02\x05"), 1},
    /* maps: no two keys equal, however encoded */
    {"map 1 twice", B("\x74\0\0\0\2" "\x61\x01\x61\x02" "\x61\x01\x61\x03"), 0},
    {"map 1 and INTEGER_EXT 1", B("\x74\0\0\0\2" "\x61\x01\x61\x02" "\x62\0\0\0\1\x61\x03"), 0},
    {"map 1 and a bignum 1", B("\x74\0\0\0\2" "\x61\x01\x61\x02" "\x6e\x02\0\x01\0\x61\x03"), 0},
    {"map a as utf8 and latin1", B("\x74\0\0\0\2" "\x77\x01" "a" "\x61\x02" "\x64\0\x01" "a" "\x61\x03"), 0},
    {"map caf\xc3\xa9 as utf8 and latin1", B("\x74\0\0\0\2" "\x77\x05" "caf\xc3\xa9" "\x61\x02" "\x64\0\x04" "caf\xe9" "\x61\x03"), 0},
    {"map e-acute as utf8 and latin1", B("\x74\0\0\0\2" "\x77\x02\xc3\xa9" "\x61\x02" "\x73\x01\xe9" "\x61\x03"), 0},
    {"map 0.0 and -0.0", B("\x74\0\0\0\2" "\x46\0\0\0\0\0\0\0\0" "\x61\x02" "\x46\x80\0\0\0\0\0\0\0" "\x61\x03"), 0},
    {"map [5] as string and list", B("\x74\0\0\0\2" "\x6b\0\x01\x05" "\x61\x02" "\x6c\0\0\0\1\x61\x05\x6a" "\x61\x03"), 0},
    {"map binary and 8-bit bitstring", B("\x74\0\0\0\2" "\x6d\0\0\0\1" "a" "\x61\x02" "\x4d\0\0\0\1\x08" "a" "\x61\x03"), 0},
    {"map of maps in another order", B("\x74\0\0\0\2" "\x74\0\0\0\2\x61\1\x61\1\x61\2\x61\2" "\x6a" "\x74\0\0\0\2\x61\2\x61\2\x61\1\x61\1" "\x6a"), 0},
    {"map one pid in PID_EXT and NEW_PID_EXT", B("\x74\0\0\0\2" "\x67" XNODE "\0\0\0\1\0\0\0\0\1" "\x6a" "\x58" XNODE "\0\0\0\1\0\0\0\0\0\0\0\1" "\x6a"), 0},
    {"map bitstrings differing in unused bits", B("\x74\0\0\0\2" "\x4d\0\0\0\1\x03\x20" "\x6a" "\x4d\0\0\0\1\x03\x3f" "\x6a"), 0},
    /* maps as keys of maps as keys: each map's digest is remembered (term_canon.c) */
    {"map of maps keyed by maps, equal when reordered", B("\x74\0\0\0\2" "\x74\0\0\0\2" "\x74\0\0\0\2" "\x77\x01" "a" "\x61\x01" "\x77\x01" "b" "\x61\x02" "\x61\x01" "\x77\x01" "c" "\x61\x02" "\x6a" "\x74\0\0\0\2" "\x77\x01" "c" "\x61\x02" "\x74\0\0\0\2" "\x77\x01" "b" "\x61\x02" "\x77\x01" "a" "\x61\x01" "\x61\x01" "\x6a"), 0},
    {"map of maps keyed by maps, one value differs", B("\x74\0\0\0\2" "\x74\0\0\0\2" "\x74\0\0\0\2" "\x77\x01" "a" "\x61\x01" "\x77\x01" "b" "\x61\x02" "\x61\x01" "\x77\x01" "c" "\x61\x02" "\x6a" "\x74\0\0\0\2" "\x77\x01" "c" "\x61\x03" "\x74\0\0\0\2" "\x77\x01" "b" "\x61\x02" "\x77\x01" "a" "\x61\x01" "\x61\x01" "\x6a"), 1},
    {"map 1 and 1.0", B("\x74\0\0\0\2" "\x61\x01\x61\x02" "\x46\x3f\xf0\0\0\0\0\0\0\x61\x03"), 1},
    {"map <<1:3>> and <<1:4>>", B("\x74\0\0\0\2" "\x4d\0\0\0\1\x03\x20" "\x6a" "\x4d\0\0\0\1\x04\x10" "\x6a"), 1},
    {"map a and b", B("\x74\0\0\0\2" "\x77\x01" "a" "\x6a" "\x77\x01" "b" "\x6a"), 1},
    /* exports: atoms and a non-negative integer arity */
    {"export arity -1", B("\x71\x77\x06" "erlang" "\x77\x04" "self" "\x62\xff\xff\xff\xff"), 0},
    {"export arity 300", B("\x71\x77\x06" "erlang" "\x77\x04" "self" "\x62\0\0\x01\x2c"), 1},
    {"export arity an atom", B("\x71\x77\x06" "erlang" "\x77\x04" "self" "\x77\x01" "a"), 0},
    {"export module an integer", B("\x71\x61\x01\x77\x04" "self" "\x61\x00"), 0},
    /* trailing bytes are ignored, as binary_to_term ignores them */
    {"trailing bytes", B("\x61\x01\x01\x02\x03"), 1},
};

static void test_validator_agrees_with_binary_to_term(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof verdicts / sizeof verdicts[0]; i++) {
        const struct verdict *v = &verdicts[i];
        char *copy = malloc(v->len + 1); /* exact size: ASan sees any overread */
        copy[0] = (char)131;
        memcpy(copy + 1, v->bytes, v->len);
        struct term_error err = {0};
        int ok = term_validate(copy, v->len + 1, &err) == 0;
        if (ok != v->beam_accepts)
            fail_msg("%s: the BEAM %s it, the validator %s it (%s)", v->what,
                     v->beam_accepts ? "accepts" : "refuses", ok ? "accepts" : "refuses",
                     ok ? "" : err.message);
        if (!ok)
            assert_string_equal(err.kind, "bad_frame");
        free(copy);
    }
}

/* A real fun (term_to_binary({x, fun(X) -> X + Y end}) on OTP 25): its fields are walked,
 * term_skip ends where the walk ends; as an argument it is badarg. */
static void test_a_real_fun_validates_and_is_refused_as_an_argument(void **state)
{
    (void)state;
    static const char fun[] =
        "\x83\x68\x02\x64\x00\x01\x78\x70\x00\x00\x00\x71\x01\xb7\x56\x52\xb4\x23\x7e\x24\x3b\x88"
        "\x09\x0e\x28\x7e\x9e\x96\x17\x00\x00\x00\x00\x00\x00\x00\x00\x64\x00\x2d\x66\x75\x6e\x5f"
        "\x65\x73\x63\x72\x69\x70\x74\x5f\x5f\x65\x73\x63\x72\x69\x70\x74\x5f\x5f\x31\x37\x39\x36"
        "\x5f\x5f\x31\x30\x36\x36\x36\x34\x5f\x5f\x38\x31\x38\x30\x32\x33\x5f\x5f\x32\x61\x00\x62"
        "\x05\xba\xb2\x95\x58\x64\x00\x0d\x6e\x6f\x6e\x6f\x64\x65\x40\x6e\x6f\x68\x6f\x73\x74\x00"
        "\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00";
    size_t n = sizeof fun - 1;
    char *copy = malloc(n); /* exact size: ASan sees any overread */
    memcpy(copy, fun, n);
    struct term_error err = {0};
    assert_int_equal(term_validate(copy, n, &err), 0);
    int index = 1;
    assert_int_equal(term_skip(copy, n, &index), 0);
    assert_int_equal(index, (int)n);
    index = 1;
    PyObject *obj = term_to_py(copy, &index, &err);
    assert_null(obj);
    assert_string_equal(err.kind, "badarg");
    /* binary_to_term ignores the Size field: so does the walk (and term_skip goes by fields) */
    copy[10]++;
    assert_int_equal(term_validate(copy, n, &err), 0);
    index = 1;
    assert_int_equal(term_skip(copy, n, &index), 0);
    assert_int_equal(index, (int)n);
    /* but OldIndex must be an integer (here the atom a in place of SMALL_INTEGER 0) */
    char *bad = malloc(n + 1);
    assert_int_equal((unsigned char)copy[85], ERL_SMALL_INTEGER_EXT);
    memcpy(bad, copy, 85);
    memcpy(bad + 85, "\x77\x01" "a", 3);
    memcpy(bad + 88, copy + 87, n - 87);
    assert_int_equal(term_validate(bad, n + 1, &err), -1);
    assert_string_equal(err.kind, "bad_frame");
    free(bad);
    free(copy);
}

/* The example: {call, <<192,128>> as an atom, ping} is a bad frame with no Ref. */
static void test_bad_atom_in_ref_is_bad_frame_without_ref(void **state)
{
    (void)state;
    const char frame[] = "\x83\x68\x03\x77\x04" "call" "\x77\x02\xc0\x80\x77\x04" "ping";
    struct call call;
    assert_int_equal(request_parse(frame, sizeof frame - 1, 1 << 20, &call), REQUEST_BAD_FRAME);
    assert_null(call.ref);
    request_release(&call);
}

/* What the validator newly lets through decodes as binary_to_term reads it. */
static void test_decoder_reads_what_the_beam_reads(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
        const char *expect;
    } cases[] = {
        {B("\x83\x77\x03" "a\0b"), "__import__('_uro_port').Atom('a\\x00b')"},
        {B("\x83\x64\0\x02\xe9\xff"), "__import__('_uro_port').Atom('\\xe9\\xff')"},
        {B("\x83\x4d\0\0\0\x02\x08" "ab"), "'ab'"},
        {B("\x83\x4d\0\0\0\0\0"), "''"},
        {B("\x83\x6c\0\0\0\0\x61\x07"), "7"},
        {B("\x83\x63" "1,5" "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"), "1.5"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct term_error err = {0};
        assert_int_equal(term_validate(cases[i].bytes, cases[i].len, &err), 0);
        int index = 1;
        PyObject *obj = term_to_py(cases[i].bytes, &index, &err);
        if (!obj)
            fail_msg("case %zu: %s", i, err.message);
        assert_py_equal(obj, cases[i].expect);
    }
}

/* A str holding surrogate escapes (a non-UTF-8 id in Python) goes out as its raw bytes. */
static void test_surrogate_escaped_str_is_its_bytes(void **state)
{
    (void)state;
    encode_to_x(eval("b'\\xff\\xfe\\x00'.decode('utf-8', 'surrogateescape')"));
    const char want[] = "\x83\x6d\0\0\0\x03\xff\xfe\x00";
    assert_int_equal(x.index, (int)sizeof want - 1);
    assert_memory_equal(x.buff, want, sizeof want - 1);
    /* a lone surrogate that is no escape still cannot be encoded */
    begin();
    struct term_error err = {0};
    PyObject *bad = eval("'\\ud800'");
    assert_int_equal(py_to_term(&x, bad, &err), -1);
    assert_string_equal(err.kind, "internal");
    Py_DECREF(bad);
}

/* ---- set-up ------------------------------------------------------------------------------- */

static int start_python(void **state)
{
    (void)state;
    Py_InitializeEx(0);
    /* numpy lives in the project's virtualenv; the codec test uses it when present */
    char site[4200];
    snprintf(site, sizeof(site), "import sys; sys.path.append('%s/lib/python3.11/site-packages')",
             URO_REC_TEST_VENV);
    PyRun_SimpleString(site);
    PyObject *m = PyModule_New("_uro_port");
    if (!m || term_module_init(m) < 0)
        return -1;
    PyObject *modules = PyImport_GetModuleDict();
    PyDict_SetItemString(modules, "_uro_port", m);
    Py_DECREF(m);
    ei_init();
    ei_x_new(&x);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_integers_decode),
        cmocka_unit_test(test_bignums_past_2_64_both_ways),
        cmocka_unit_test(test_floats_and_non_finite),
        cmocka_unit_test(test_special_atoms),
        cmocka_unit_test(test_atoms_become_atom_str_and_back),
        cmocka_unit_test(test_binaries_text_and_bytes),
        cmocka_unit_test(test_containers),
        cmocka_unit_test(test_map_with_unhashable_key_is_badarg),
        cmocka_unit_test(test_numpy_scalars_and_arrays),
        cmocka_unit_test(test_unencodable_object_is_internal_error),
        cmocka_unit_test(test_pids_ports_refs_funs_are_refused),
        cmocka_unit_test(test_improper_list_and_bitstring_are_refused),
        cmocka_unit_test(test_depth_limit_both_ways),
        cmocka_unit_test(test_every_truncation_is_an_error),
        cmocka_unit_test(test_malformed_corpus),
        cmocka_unit_test(test_random_mutations_never_crash),
        cmocka_unit_test(test_find_call_ref_of_too_deep_call),
        cmocka_unit_test(test_validator_agrees_with_binary_to_term),
        cmocka_unit_test(test_a_real_fun_validates_and_is_refused_as_an_argument),
        cmocka_unit_test(test_bad_atom_in_ref_is_bad_frame_without_ref),
        cmocka_unit_test(test_decoder_reads_what_the_beam_reads),
        cmocka_unit_test(test_surrogate_escaped_str_is_its_bytes),
    };
    return cmocka_run_group_tests(tests, start_python, NULL);
}
