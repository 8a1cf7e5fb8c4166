/*
 * main.c: process set-up and the port loop of uro_recommender.
 *
 * Owns the command line, the file descriptors, the signals, and the loop that waits on stdin
 * and on the signal pipe. It starts the interpreter (pybridge.c) and hands each frame to
 * commands.c. The rules it keeps:
 *   - fd 1 is the protocol: frames leave through a private duplicate of it, and fd 1 itself
 *     is pointed, before Python starts, at a pipe whose lines become {log, info, Line}
 *     frames, so a stray print from native code cannot corrupt the stream.
 *   - stdin EOF and SIGTERM/SIGINT/SIGHUP end the process with status 0 once the current call
 *     has replied; the parent's death kills us outright (nobody is left to read a reply).
 *   - a failure to start Python does not exit: every call that needs it gets an error term,
 *     so a supervisor sees the reason instead of a crash loop.
 */
#define _GNU_SOURCE
#include "commands.h"
#include "db.h"
#include "deadline.h"
#include "erlcmd.h"
#include "frames.h"
#include "pybridge.h"
#include "stats.h"
#include "check.h"
#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct options {
    const char *venv;       /* --venv, NULL when not given (paths.c looks it up) */
    const char *python_dir; /* --python-dir, likewise */
    const char *data_dir;   /* --data-dir, likewise */
    char model_dir[PATH_MAX];
    char database_url[4096];
    size_t max_frame;
    int check, paths_only;
};

/* Settings given as flags that are read from the environment. Each sets its environment
 * variable before Python starts, so a flag and its variable are one setting (the flag wins);
 * Python reads the variables (python/uro_rec/limits.py, signing.py), and the database plane
 * its own (c_src/db_connection.c: db_configure); docs/OPERATIONS.md has the table. */
static const struct {
    const char *flag, *env;
    int takes_value; /* 0: a switch, which sets the variable to "1" */
} python_settings[] = {
    {"--max-rows", "URO_REC_MAX_ROWS", 1},
    {"--csv-max-line", "URO_REC_CSV_MAX_LINE", 1},
    {"--model-key-file", "URO_REC_MODEL_KEY_FILE", 1},
    {"--allow-unsigned-models", "URO_REC_ALLOW_UNSIGNED_MODELS", 0},
    {"--db-connect-timeout", "URO_REC_DB_CONNECT_TIMEOUT", 1},
};
#define N_PYTHON_SETTINGS (sizeof(python_settings) / sizeof(python_settings[0]))

static int signal_pipe[2] = {-1, -1};
static volatile sig_atomic_t stop_requested; /* frames already read are then not served */

static void usage(void)
{
    say("usage: uro_recommender [options]\n"
        "\n"
        "An Erlang port program: {packet,4} frames of external term format on stdin/stdout,\n"
        "serving LibRecommender from an embedded CPython. See docs/PROTOCOL.md.\n"
        "\n"
        "  --model-dir DIR     where models are saved as DIR/<name>/<version>/\n"
        "                      (env URO_REC_MODEL_DIR; default ~/.local/share/uro_recommender/models)\n"
        "  --venv DIR          the Python 3.11 virtualenv (env URO_REC_VENV; else <exe_dir>/venv,\n"
        "                      else ~/.cache/uro_recommender/venv-<hash of requirements.txt>)\n"
        "  --python-dir DIR    the directory holding the uro_rec package (env URO_REC_PYTHON_DIR;\n"
        "                      else <exe_dir>/python, else <exe_dir>/../python)\n"
        "  --database-url URL  libpq conninfo or URL of CockroachDB/PostgreSQL (env DATABASE_URL);\n"
        "                      nothing connects until a database command needs it\n"
        "  --db-connect-timeout S  seconds a database connect may take (env\n"
        "                      URO_REC_DB_CONNECT_TIMEOUT; default 5; 0: none); a connect_timeout\n"
        "                      in the URL wins\n"
        "  --max-frame BYTES   larger request frames are dropped with {error, {too_large, _}}\n"
        "                      (env URO_REC_MAX_FRAME; default %u)\n"
        "  --data-dir DIR      {csv, Path} may only name files inside DIR, symlinks and ..\n"
        "                      resolved (env URO_REC_DATA_DIR; default: any readable file)\n"
        "  --max-rows N        rows of one training source: rows, csv or sql\n"
        "                      (env URO_REC_MAX_ROWS; default 20000000)\n"
        "  --csv-max-line BYTES  longest line of a csv source (env URO_REC_CSV_MAX_LINE;\n"
        "                      default 65536)\n"
        "  --model-key-file F  the keys that sign and verify saved models, one per line, the\n"
        "                      first signs (env URO_REC_MODEL_KEY_FILE, or the keys themselves\n"
        "                      in URO_REC_MODEL_KEY); see docs/OPERATIONS.md\n"
        "  --allow-unsigned-models  load versions that carry no signature (env\n"
        "                      URO_REC_ALLOW_UNSIGNED_MODELS=1); a wrong signature is refused\n"
        "  --check             self-test for a person: interpreter, LibRecommender, every model\n"
        "                      family, model directory; prints start-up time and memory\n"
        "  --paths             print where each file is looked up and what was found; no Python\n"
        "  --version           print the version and protocol version\n"
        "  --help              this text\n",
        DEFAULT_MAX_FRAME);
}

static void copy_path(char *dst, const char *src)
{
    snprintf(dst, PATH_MAX, "%s", src);
}

/* A flag of python_settings: sets its variable and returns 1 (advancing *i past its value),
 * or returns 0 when a is not one of them. */
static int python_setting(int argc, char **argv, int *i)
{
    for (size_t k = 0; k < N_PYTHON_SETTINGS; k++) {
        if (strcmp(argv[*i], python_settings[k].flag) != 0)
            continue;
        if (!python_settings[k].takes_value)
            return setenv(python_settings[k].env, "1", 1) == 0;
        if (*i + 1 >= argc)
            return 0; /* incomplete: reported by the caller */
        return setenv(python_settings[k].env, argv[++*i], 1) == 0;
    }
    return 0;
}

/* The model dir, the database and the frame limit. The python dir and the virtualenv are
 * paths.c's lookup, run once the flags are known. */
static void default_paths(struct options *o)
{
    const char *env;
    if ((env = getenv("URO_REC_MODEL_DIR")) && *env) {
        copy_path(o->model_dir, env);
    } else {
        const char *data = getenv("XDG_DATA_HOME");
        if (data && *data)
            snprintf(o->model_dir, PATH_MAX, "%.*s/uro_recommender/models", PATH_MAX - 64, data);
        else
            snprintf(o->model_dir, PATH_MAX, "%.*s/.local/share/uro_recommender/models",
                     PATH_MAX - 64, getenv("HOME") ? getenv("HOME") : "/tmp");
    }
    if ((env = getenv("DATABASE_URL")) && *env)
        snprintf(o->database_url, sizeof(o->database_url), "%s", env);
    o->max_frame = DEFAULT_MAX_FRAME;
    if ((env = getenv("URO_REC_MAX_FRAME")) && *env)
        o->max_frame = strtoull(env, NULL, 10);
}

static int parse_args(int argc, char **argv, struct options *o)
{
    default_paths(o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            exit(0);
        } else if (strcmp(a, "--version") == 0) {
            say("uro_recommender %s (protocol %d)\n", URO_REC_VERSION, URO_REC_PROTOCOL);
            exit(0);
        } else if (strcmp(a, "--check") == 0) {
            o->check = 1;
        } else if (value && strcmp(a, "--model-dir") == 0) {
            copy_path(o->model_dir, argv[++i]);
        } else if (strcmp(a, "--paths") == 0) {
            o->paths_only = 1;
        } else if (value && strcmp(a, "--venv") == 0) {
            o->venv = argv[++i];
        } else if (value && strcmp(a, "--python-dir") == 0) {
            o->python_dir = argv[++i];
        } else if (value && strcmp(a, "--database-url") == 0) {
            snprintf(o->database_url, sizeof(o->database_url), "%s", argv[++i]);
        } else if (value && strcmp(a, "--max-frame") == 0) {
            o->max_frame = strtoull(argv[++i], NULL, 10);
        } else if (value && strcmp(a, "--data-dir") == 0) {
            o->data_dir = argv[++i];
        } else if (!python_setting(argc, argv, &i)) {
            fprintf(stderr, "uro_recommender: unknown or incomplete option %s (try --help)\n", a);
            return -1;
        }
    }
    if (o->max_frame == 0)
        o->max_frame = DEFAULT_MAX_FRAME;
    return 0;
}

/* ---- signals ---------------------------------------------------------------------------- */

static void on_signal(int sig)
{
    int saved = errno;
    stop_requested = 1;
    unsigned char b = (unsigned char)sig;
    if (write(signal_pipe[1], &b, 1) < 0) {
        /* the pipe is full: a stop is already pending */
    }
    errno = saved;
}

static int set_cloexec_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
        return -1;
    fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int install_signals(void)
{
    if (pipe(signal_pipe) < 0 || set_cloexec_nonblock(signal_pipe[0]) < 0 ||
        set_cloexec_nonblock(signal_pipe[1]) < 0)
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    /* A dead reader shows up as EPIPE from write(2), not as a fatal signal. */
    signal(SIGPIPE, SIG_IGN);
    /* The BEAM starts ports with SIGCHLD ignored; Python's subprocess then cannot wait for
     * its children and hangs. Restore the default before Python starts. */
    signal(SIGCHLD, SIG_DFL);
    /* If the BEAM (our parent) dies, nobody will read a reply: go at once, mid-call too. */
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    return 0;
}

/* ---- the loop ---------------------------------------------------------------------------- */

static void on_frame(enum erlcmd_status status, const char *data, size_t len, void *cookie)
{
    (void)cookie;
    if (stop_requested)
        return; /* stopping: the current call has replied, later ones are not started */
    if (status == ERLCMD_TOO_LARGE)
        commands_handle_too_large(len);
    else
        commands_handle_frame(data, len);
}

/* Returns when stdin reaches EOF or a stop signal arrives. */
static void serve(struct erlcmd *cmd)
{
    struct pollfd fds[2] = {{.fd = cmd->in_fd, .events = POLLIN},
                            {.fd = signal_pipe[0], .events = POLLIN}};
    for (;;) {
        int n = poll(fds, 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (fds[1].revents)
            return;
        if (fds[0].revents && erlcmd_process(cmd) < 0)
            return;
    }
}


/* Starts the interpreter, or leaves the port serving without it: every call that needs Python
 * then answers python_unavailable with the reason (commands_disable_python). */
static void start_python(const struct paths *paths, const struct pybridge_config *py)
{
    uint64_t t0 = stats_now_us();
    char why[4096];
    if (paths_explain_missing(paths, why, sizeof(why)) < 0 ||
        pybridge_start(py, why, sizeof(why)) < 0) {
        frames_logf("error", "python did not start: %s", why);
        commands_disable_python(why);
        return;
    }
    frames_logf("info", "uro_recommender %s ready in %llu ms, %ld KiB resident, models in %s",
                URO_REC_VERSION, (unsigned long long)(stats_now_us() - t0) / 1000,
                stats_resident_kib(), py->model_dir);
}


int main(int argc, char **argv)
{
    struct options o;
    memset(&o, 0, sizeof(o));
    if (parse_args(argc, argv, &o) < 0)
        return 2;
    commands_set_frame_limit(o.max_frame);
    db_configure(o.database_url);
    static struct paths paths; /* 50 KiB: not on the stack */
    struct paths_inputs in;
    paths_inputs_from_process(&in, o.python_dir, o.venv, o.data_dir);
    paths_resolve(&in, &paths);
    /* Python reads the confinement from the environment, resolved (csv_reader.py). */
    if (paths_data_dir(&paths))
        setenv("URO_REC_DATA_DIR", paths_data_dir(&paths), 1);
    if (o.paths_only) {
        paths_print(&paths, STDOUT_FILENO);
        say("  model dir   %s   (--model-dir > URO_REC_MODEL_DIR > "
            "${XDG_DATA_HOME:-~/.local/share}/uro_recommender/models)\n", o.model_dir);
        return 0;
    }
    struct pybridge_config py = {paths_get(&paths, PATHS_VENV),
                                 paths_get(&paths, PATHS_PYTHON_DIR), o.model_dir};
    if (o.check)
        return check_main(&py, &paths);

    /* From here on the frames have their own descriptor; fd 1 is pointed at fd 2 until the
     * frame writer exists, then at a pipe whose lines become log frames. */
    int frame_fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    if (frame_fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        fprintf(stderr, "uro_recommender: cannot set up fd 1: %s\n", strerror(errno));
        return 1;
    }
    if (install_signals() < 0 || deadline_start() < 0) {
        fprintf(stderr, "uro_recommender: cannot set up signals: %s\n", strerror(errno));
        return 1;
    }

    struct erlcmd cmd;
    erlcmd_init(&cmd, STDIN_FILENO, frame_fd, o.max_frame, on_frame, NULL);
    frames_init(&cmd);
    stats_init();
    if (frames_capture_native_stdout() < 0)
        frames_logf("warning", "native writes to fd 1 go to stderr: %s", strerror(errno));

    /* Serving is one call at a time per port; parallelism comes from the pool. A threaded
     * BLAS only adds hand-offs to a 10,000 x 32 product and, on a busy machine, waits for
     * a core: measured p99 of recommend 4.3 ms with OpenBLAS threads, 0.4 ms without. */
    setenv("OPENBLAS_NUM_THREADS", "1", 0);
    setenv("TF_CPP_MIN_LOG_LEVEL", "2", 0);

    start_python(&paths, &py);
    serve(&cmd);

    /* Every reply has been written synchronously. Skip Py_Finalize: TensorFlow's and torch's
     * threads make interpreter teardown slow and occasionally crash, and there is nothing
     * left to flush. */
    _exit(0);
}
