/*
 * commands.c: the dispatch table and the handlers that live in C (see commands.h).
 *
 * ping and info are answered here. Every other command is a function of the same name in
 * python/uro_rec/commands.py: its arguments are decoded (term.c) into a tuple and passed as
 * they are; shape and type checks beyond the arity are Python's, which names the field.
 */
#include "commands.h"

#include "deadline.h"
#include "frames.h"
#include "pybridge.h"
#include "stats.h"
#include "term.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define COMPRESSED_TAG 80
#define VERSION_MAGIC 131

#define MAX_COMMAND_NAME 64

/* One call, as parsed from its frame. Slices point into the frame. */
struct call {
    const char *frame;
    size_t len;
    const char *ref;
    int ref_len;
    char name[MAX_COMMAND_NAME];
    int n_args;        /* elements after the name; 0 for a bare atom */
    int args_index;    /* where the first argument starts */
    long timeout_ms;   /* from CallOpts; 0 when none */
};

typedef const char *(*command_fn)(const struct call *call);

struct command {
    const char *name;
    int min_args;
    int max_args;
    command_fn run;
};

static const char *run_ping(const struct call *call);
static const char *run_info(const struct call *call);
static const char *run_in_python(const struct call *call);
static const char *run_fault(const struct call *call);

/* Sorted only for the reader; lookup is linear over a dozen names. */
static const struct command commands[] = {
    {"apply_schema", 0, 1, run_in_python},
    {"echo", 1, 1, run_in_python},
    {"evaluate", 2, 3, run_in_python},
    {"export", 1, 2, run_in_python},
    {"fault", 1, 1, run_fault},
    {"info", 0, 0, run_info},
    {"load", 1, 2, run_in_python},
    {"models", 0, 1, run_in_python},
    {"observe", 2, 3, run_in_python},
    {"ping", 0, 0, run_ping},
    {"predict", 3, 4, run_in_python},
    {"publish", 1, 2, run_in_python},
    {"recommend", 3, 4, run_in_python},
    {"recommend_many", 3, 4, run_in_python},
    {"save", 1, 1, run_in_python},
    {"similar_items", 3, 3, run_in_python},
    {"train", 2, 2, run_in_python},
    {"unload", 1, 1, run_in_python},
    {"update_features", 2, 2, run_in_python},
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Set when the interpreter failed to start: the reason every Python command answers with. */
static char python_down[1024];

/* ---- handlers ------------------------------------------------------------------------------ */

static const char *run_ping(const struct call *call)
{
    return frames_reply_ok_atom(call->ref, call->ref_len, "pong");
}

static const char *reply_python_error(const struct call *call)
{
    PyObject *detail = NULL;
    const char *kind = pybridge_take_error(&detail);
    const char *sent = detail ? frames_reply_error_py(call->ref, call->ref_len, kind, detail)
                              : frames_reply_error(call->ref, call->ref_len, kind, "no detail");
    Py_XDECREF(detail);
    return sent;
}

static const char *run_info(const struct call *call)
{
    if (python_down[0]) /* no interpreter: the C half of info still answers */
        return frames_reply_error(call->ref, call->ref_len, "internal", "%s", python_down);
    PyObject *empty = PyTuple_New(0);
    PyObject *info = empty ? pybridge_call("uro_rec.commands", "python_info", empty) : NULL;
    Py_XDECREF(empty);
    if (!info)
        return reply_python_error(call);
    const char *sent;
    PyObject *k_version = term_make_atom("version", 7);
    PyObject *k_protocol = term_make_atom("protocol", 8);
    PyObject *v_version = PyUnicode_FromString(URO_REC_VERSION);
    PyObject *v_protocol = PyLong_FromLong(URO_REC_PROTOCOL);
    if (!PyDict_Check(info) || !k_version || !k_protocol || !v_version || !v_protocol ||
        PyDict_SetItem(info, k_version, v_version) < 0 ||
        PyDict_SetItem(info, k_protocol, v_protocol) < 0 || stats_fill(info) < 0) {
        PyErr_Clear();
        sent = frames_reply_error(call->ref, call->ref_len, "internal", "info: cannot build");
    } else {
        sent = frames_reply_ok(call->ref, call->ref_len, info);
    }
    Py_XDECREF(k_version);
    Py_XDECREF(k_protocol);
    Py_XDECREF(v_version);
    Py_XDECREF(v_protocol);
    Py_DECREF(info);
    return sent;
}

static const char *call_python(const struct call *call, const char *module, const char *fn,
                               PyObject *args);

static PyObject *decode_args(const struct call *call, struct term_error *err)
{
    PyObject *args = PyTuple_New(call->n_args);
    if (!args)
        return NULL;
    int index = call->args_index;
    for (int i = 0; i < call->n_args; i++) {
        PyObject *arg = term_to_py(call->frame, &index, err);
        if (!arg) {
            Py_DECREF(args);
            return NULL;
        }
        PyTuple_SET_ITEM(args, i, arg);
    }
    return args;
}

void commands_disable_python(const char *why)
{
    snprintf(python_down, sizeof(python_down), "python did not start: %s", why);
}

/* Decodes the call's arguments and runs module.fn on them (python/uro_rec). */
static const char *run_python_function(const struct call *call, const char *module,
                                       const char *fn)
{
    if (python_down[0])
        return frames_reply_error(call->ref, call->ref_len, "internal", "%s", python_down);
    struct term_error err = {0};
    PyObject *args = decode_args(call, &err);
    if (!args)
        return frames_reply_error(call->ref, call->ref_len, err.kind ? err.kind : "internal",
                                  "%s: %s", call->name, err.message);
    return call_python(call, module, fn, args);
}

static const char *run_in_python(const struct call *call)
{
    return run_python_function(call, "uro_rec.commands", call->name);
}

/* Calls module.fn(*args) under the call's deadline and replies; steals args. */
static const char *call_python(const struct call *call, const char *module, const char *fn,
                               PyObject *args)
{
    deadline_arm(call->timeout_ms);
    PyObject *result = pybridge_call(module, fn, args);
    deadline_disarm();
    Py_DECREF(args);
    if (!result) {
        if (deadline_take_expired())
            return frames_reply_error(call->ref, call->ref_len, "timeout",
                                      "%s did not finish within %ld ms", call->name,
                                      call->timeout_ms);
        return reply_python_error(call);
    }
    const char *sent = frames_reply_ok(call->ref, call->ref_len, result);
    Py_DECREF(result);
    return sent;
}

/* {fault, Kind}: crash or wedge the interpreter on purpose, for supervision tests. Refused
 * unless the port was started with URO_REC_FAULTS=1, so production cannot be crashed by a
 * stray term. */
static const char *run_fault(const struct call *call)
{
    const char *enabled = getenv("URO_REC_FAULTS");
    if (!enabled || strcmp(enabled, "1") != 0)
        return frames_reply_error(call->ref, call->ref_len, "unsupported",
                                  "fault injection is off: start the port with URO_REC_FAULTS=1");
    return run_python_function(call, "uro_rec.faults", "inject");
}

/* ---- parsing the call frame ---------------------------------------------------------------- */

static int decode_atom_name(const char *buf, int *index, char *name, size_t n)
{
    int type, size;
    if (ei_get_type(buf, index, &type, &size) < 0 || type != ERL_ATOM_EXT)
        return -1;
    char atom[MAXATOMLEN_UTF8];
    if (ei_decode_atom_as(buf, index, atom, sizeof(atom), ERLANG_UTF8, NULL, NULL) < 0)
        return -1;
    if (strlen(atom) >= n)
        return -1;
    memcpy(name, atom, strlen(atom) + 1);
    return 0;
}

/* Reads timeout_ms from CallOpts (a map or a proplist); other keys are ignored. Returns -1
 * if timeout_ms is there but not a positive integer. */
static int parse_call_opts(const char *frame, size_t len, int index, struct call *call)
{
    int type, size, arity, is_map;
    ei_get_type(frame, &index, &type, &size);
    if (type == ERL_MAP_EXT) {
        ei_decode_map_header(frame, &index, &arity);
        is_map = 1;
    } else if (type == ERL_LIST_EXT) {
        ei_decode_list_header(frame, &index, &arity);
        is_map = 0;
    } else {
        return type == ERL_NIL_EXT ? 0 : -1;
    }
    for (int i = 0; i < arity; i++) {
        int pair_arity = 2, element = index;
        if (!is_map && (ei_decode_tuple_header(frame, &index, &pair_arity) < 0 || pair_arity != 2)) {
            index = element; /* not a {Key, Value}: skip the whole element */
            if (term_skip(frame, len, &index) < 0)
                return -1;
            continue;
        }
        char key[MAX_COMMAND_NAME];
        int key_index = index;
        int is_timeout = decode_atom_name(frame, &index, key, sizeof(key)) == 0 &&
                         strcmp(key, "timeout_ms") == 0;
        if (!is_timeout) {
            index = key_index;
            if (term_skip(frame, len, &index) < 0 || term_skip(frame, len, &index) < 0)
                return -1;
            continue;
        }
        long v;
        if (ei_decode_long(frame, &index, &v) < 0 || v <= 0)
            return -1;
        call->timeout_ms = v;
    }
    return 0;
}

/* Fills call from a validated frame; -1 if the frame is not a call, 1 if it is a call but
 * the command is not a name, 2 if its CallOpts are malformed. */
static int parse_call(const char *frame, size_t len, struct call *call)
{
    int index = 0, arity, version;
    char tag[8];
    memset(call, 0, sizeof(*call));
    call->frame = frame;
    call->len = len;
    if (ei_decode_version(frame, &index, &version) < 0 ||
        ei_decode_tuple_header(frame, &index, &arity) < 0 || (arity != 3 && arity != 4) ||
        decode_atom_name(frame, &index, tag, sizeof(tag)) < 0 || strcmp(tag, "call") != 0)
        return -1;
    call->ref = frame + index;
    if (term_skip(frame, len, &index) < 0)
        return -1;
    call->ref_len = (int)(frame + index - call->ref);

    /* Command: an atom, or a tuple whose first element is an atom. CallOpts (the fourth
     * element) is parsed last: timeout_ms; other keys are left for later protocol versions. */
    int cmd_index = index, cmd_arity;
    if (ei_decode_tuple_header(frame, &index, &cmd_arity) == 0) {
        if (cmd_arity < 1)
            return 1;
        call->n_args = cmd_arity - 1;
    } else {
        index = cmd_index;
        call->n_args = 0;
    }
    if (decode_atom_name(frame, &index, call->name, sizeof(call->name)) < 0)
        return 1; /* a call, but the command is not a name: unknown_command */
    call->args_index = index;
    if (arity == 4) {
        index = cmd_index;
        if (term_skip(frame, len, &index) < 0 || parse_call_opts(frame, len, index, call) < 0)
            return 2;
    }
    return 0;
}

static const char *dispatch(const struct call *call, const struct command *cmd)
{
    if (!cmd)
        return frames_reply_error(call->ref, call->ref_len, "unknown_command", "%s", call->name);
    if (call->n_args < cmd->min_args || call->n_args > cmd->max_args) {
        if (cmd->min_args == 0 && cmd->max_args == 0)
            return frames_reply_error(call->ref, call->ref_len, "badarg",
                                      "%s takes no arguments: send the bare atom", cmd->name);
        return frames_reply_error(call->ref, call->ref_len, "badarg",
                                  "%s takes %d to %d arguments, got %d", cmd->name,
                                  cmd->min_args, cmd->max_args, call->n_args);
    }
    return cmd->run(call);
}

static size_t frame_limit = 64u << 20;

void commands_set_frame_limit(size_t limit)
{
    frame_limit = limit;
}

/* term_to_binary(T, [compressed]) is <<131, 80, Size:32, ZlibData>>. Inflates it into a plain
 * <<131, Term>> frame in *out (caller frees). Returns 0, or -1 with why set. The size the
 * sender claims is checked against the frame limit before anything is allocated. */
static int inflate_frame(const char *frame, size_t len, char **out, size_t *out_len,
                         const char **why)
{
    const unsigned char *p = (const unsigned char *)frame;
    if (len < 6) {
        *why = "truncated compressed term";
        return -1;
    }
    uLongf size = ((uLongf)p[2] << 24) | ((uLongf)p[3] << 16) | ((uLongf)p[4] << 8) | p[5];
    if (size + 1 > frame_limit) {
        *why = "compressed term inflates past the frame limit";
        return -1;
    }
    char *buf = malloc(size + 1);
    if (!buf) {
        *why = "out of memory inflating a compressed term";
        return -1;
    }
    buf[0] = (char)VERSION_MAGIC;
    uLongf got = size;
    if (uncompress((Bytef *)buf + 1, &got, p + 6, (uLong)(len - 6)) != Z_OK || got != size) {
        free(buf);
        *why = "compressed term does not inflate to its stated size";
        return -1;
    }
    *out = buf;
    *out_len = size + 1;
    return 0;
}

static void handle_plain_frame(const char *frame, size_t len, uint64_t start);

void commands_handle_frame(const char *frame, size_t len)
{
    uint64_t start = stats_now_us();
    if (len >= 2 && (unsigned char)frame[0] == VERSION_MAGIC &&
        (unsigned char)frame[1] == COMPRESSED_TAG) {
        char *plain;
        size_t plain_len;
        const char *why;
        if (inflate_frame(frame, len, &plain, &plain_len, &why) < 0) {
            stats_record("bad_frame", 0, frames_reply_error(NULL, 0, "bad_frame", "%s", why));
            return;
        }
        /* Once only, as binary_to_term: a compressed term inside is a bad frame. */
        handle_plain_frame(plain, plain_len, start);
        free(plain);
        return;
    }
    handle_plain_frame(frame, len, start);
}

/* A frame holding a plain <<131, Term>>; start is when it arrived (inflating counts). */
static void handle_plain_frame(const char *frame, size_t len, uint64_t start)
{
    struct term_error err = {0};
    struct call call;
    const char *name = "bad_frame";
    const char *kind;

    if (term_validate(frame, len, &err) < 0) {
        /* Too deep is the caller's mistake, not a broken frame: answer its Ref if we can. */
        const char *ref = NULL;
        int ref_len = 0;
        if (strcmp(err.kind, "badarg") != 0 || term_find_call_ref(frame, len, &ref, &ref_len) < 0)
            kind = frames_reply_error(NULL, 0, "bad_frame", "%s", err.message);
        else
            kind = frames_reply_error(ref, ref_len, "badarg", "%s", err.message);
    } else {
        int parsed = parse_call(frame, len, &call);
        if (parsed < 0) {
            kind = frames_reply_error(NULL, 0, "bad_frame",
                                      "expected {call, Ref, Command} or {call, Ref, Command, Opts}");
        } else if (parsed == 1) {
            name = "unknown_command";
            kind = frames_reply_error(call.ref, call.ref_len, "unknown_command",
                                      "a command is an atom or a tuple starting with one");
        } else if (parsed == 2) {
            kind = frames_reply_error(call.ref, call.ref_len, "badarg",
                                      "CallOpts must be a map or a proplist, and timeout_ms "
                                      "in it a positive integer");
        } else {
            const struct command *cmd = find_command(call.name);
            name = cmd ? cmd->name : "unknown_command";
            frames_set_current_ref(call.ref, call.ref_len);
            kind = dispatch(&call, cmd);
            frames_set_current_ref(NULL, 0);
        }
    }
    stats_record(name, stats_now_us() - start, kind);
}

void commands_handle_too_large(size_t len)
{
    const char *kind = frames_reply_error(NULL, 0, "too_large", "frame of %zu bytes is over "
                                          "the limit of %zu", len, frame_limit);
    stats_record("too_large", 0, kind);
}
