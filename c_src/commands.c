/*
 * commands.c: the dispatch table and the handlers that live in C (see commands.h).
 *
 * The frame arrives parsed (request.c): a call, or an outcome that says which error to reply.
 * ping and info are answered here. Every other command is a function of the same name in
 * python/uro_rec/commands.py: its arguments are decoded (term.c) into a tuple and passed as
 * they are; shape and type checks beyond the arity are Python's, which names the field.
 */
#include "commands.h"

#include "deadline.h"
#include "frames.h"
#include "pybridge.h"
#include "request.h"
#include "stats.h"
#include "term.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A handler replies, and returns the reply's error kind: NULL for {ok, _}. Every function
 * here that replies returns it the same way, under the name kind, for stats_record. */
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
    {"compare", 3, 4, run_in_python},
    {"echo", 1, 1, run_in_python},
    {"evaluate", 2, 3, run_in_python},
    {"export", 1, 2, run_in_python},
    {"fault", 1, 1, run_fault},
    {"forget_user", 1, 2, run_in_python},
    {"info", 0, 0, run_info},
    {"lease", 2, 3, run_in_python},
    {"load", 1, 2, run_in_python},
    {"models", 0, 1, run_in_python},
    {"observe", 2, 3, run_in_python},
    {"observe_source", 2, 3, run_in_python},
    {"ping", 0, 0, run_ping},
    {"predict", 3, 4, run_in_python},
    {"publish", 1, 2, run_in_python},
    {"purge_forgotten", 2, 3, run_in_python},
    {"recommend", 3, 4, run_in_python},
    {"recommend_many", 3, 4, run_in_python},
    {"record_interactions", 1, 2, run_in_python},
    {"record_run", 1, 1, run_in_python},
    {"save", 1, 1, run_in_python},
    {"serve", 2, 3, run_in_python},
    {"served", 0, 0, run_in_python},
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
    const char *raised = pybridge_take_error(&detail);
    const char *kind = detail ? frames_reply_error_py(call->ref, call->ref_len, raised, detail)
                              : frames_reply_error(call->ref, call->ref_len, raised, "no detail");
    Py_XDECREF(detail);
    return kind;
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
    const char *kind;
    PyObject *k_version = term_make_atom("version", 7);
    PyObject *k_protocol = term_make_atom("protocol", 8);
    PyObject *v_version = PyUnicode_FromString(URO_REC_VERSION);
    PyObject *v_protocol = PyLong_FromLong(URO_REC_PROTOCOL);
    if (!PyDict_Check(info) || !k_version || !k_protocol || !v_version || !v_protocol ||
        PyDict_SetItem(info, k_version, v_version) < 0 ||
        PyDict_SetItem(info, k_protocol, v_protocol) < 0 || stats_fill(info) < 0) {
        PyErr_Clear();
        kind = frames_reply_error(call->ref, call->ref_len, "internal", "info: cannot build");
    } else {
        kind = frames_reply_ok(call->ref, call->ref_len, info);
    }
    Py_XDECREF(k_version);
    Py_XDECREF(k_protocol);
    Py_XDECREF(v_version);
    Py_XDECREF(v_protocol);
    Py_DECREF(info);
    return kind;
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
    const char *kind = frames_reply_ok(call->ref, call->ref_len, result);
    Py_DECREF(result);
    return kind;
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

/* ---- serving a frame ------------------------------------------------------------------------ */

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

static size_t frame_limit = DEFAULT_MAX_FRAME;

void commands_set_frame_limit(size_t limit)
{
    frame_limit = limit;
}

/* What a request that is not a servable call is answered with, and the name its latency is
 * counted under in info. */
static const struct {
    const char *kind;
    const char *counted_as;
} refusals[] = {
    [REQUEST_BAD_FRAME] = {"bad_frame", "bad_frame"},
    [REQUEST_TOO_DEEP] = {"badarg", "bad_frame"},
    [REQUEST_NOT_A_COMMAND] = {"unknown_command", "unknown_command"},
    [REQUEST_BAD_CALL_OPTS] = {"badarg", "bad_frame"},
};

void commands_handle_frame(const char *frame, size_t len)
{
    uint64_t start = stats_now_us(); /* inflating and parsing count */
    struct call call;
    enum request_outcome outcome = request_parse(frame, len, frame_limit, &call);
    const char *name, *kind;
    if (outcome == REQUEST_CALL) {
        const struct command *cmd = find_command(call.name);
        name = cmd ? cmd->name : "unknown_command";
        frames_set_current_ref(call.ref, call.ref_len);
        kind = dispatch(&call, cmd);
        frames_set_current_ref(NULL, 0);
    } else {
        name = refusals[outcome].counted_as;
        kind = frames_reply_error(call.ref, call.ref_len, refusals[outcome].kind, "%s",
                                  call.why);
    }
    request_release(&call);
    stats_record(name, stats_now_us() - start, kind);
}

void commands_handle_too_large(size_t len)
{
    const char *kind = frames_reply_error(NULL, 0, "too_large", "frame of %zu bytes is over "
                                          "the limit of %zu", len, frame_limit);
    stats_record("too_large", 0, kind);
}
