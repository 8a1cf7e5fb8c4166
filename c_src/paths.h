/*
 * paths.h: where the port finds its Python package, its virtualenv and its SQL files.
 *
 * No path of the build machine is compiled in: each file is found from explicit configuration
 * (a flag, an environment variable) or relative to the executable, in the order README.md's
 * table "Where every file is looked up" gives, the first hit winning. The only thing compiled
 * in is the hash of python/requirements.txt that names the developer's cached virtualenv
 * (scripts/setup.sh computes the same), which is not a path.
 *
 *   python dir   --python-dir > URO_REC_PYTHON_DIR > <exe_dir>/python > <exe_dir>/../python
 *   virtualenv   --venv > URO_REC_VENV > <exe_dir>/venv
 *                > ${XDG_CACHE_HOME:-$HOME/.cache}/uro_recommender/venv-<hash>
 *   SQL files    <python_dir>/../sql > <python_dir>/../priv/sql   (python/uro_rec/schema.py
 *                applies the same rule for apply_schema; --check compares the two)
 *
 * An explicit setting (flag or environment) is final: when it names something unusable the
 * lookup fails and says so, rather than quietly running on another virtualenv than the one
 * the operator named. Implicit places are probed and passed over with a reason.
 */
#ifndef URO_PATHS_H
#define URO_PATHS_H

#include <limits.h>
#include <stddef.h>

enum paths_item { PATHS_PYTHON_DIR, PATHS_VENV, PATHS_SQL_DIR, PATHS_N };

#define PATHS_MAX_RULES 4

struct paths_candidate {
    const char *rule;    /* "--venv", "URO_REC_VENV", "<exe_dir>/venv", ... (static) */
    char path[PATH_MAX]; /* empty when the rule named nothing (flag not given, env unset) */
    const char *why_not; /* NULL for the chosen one, else why it was passed over (static) */
};

struct paths_lookup {
    const char *what; /* "python dir", "virtualenv", "SQL files" */
    int n;            /* candidates tried, in order; the chosen one, if any, is the last */
    int chosen;       /* index into tried, or -1 when nothing fit */
    struct paths_candidate tried[PATHS_MAX_RULES];
};

struct paths {
    /* as the inputs gave them, for the report */
    char exe_dir[PATH_MAX], cache_home[PATH_MAX], venv_hash[64];
    struct paths_lookup item[PATHS_N];
};

/* What the lookup reads, injected so that tests can give their own. NULL or "" means not
 * given / not set / unknown. */
struct paths_inputs {
    const char *flag_python_dir, *flag_venv;
    const char *env_python_dir, *env_venv;
    const char *exe_dir;    /* the directory of the running executable */
    const char *cache_home; /* ${XDG_CACHE_HOME:-$HOME/.cache} */
    const char *venv_hash;  /* URO_REC_VENV_HASH */
};

/* Fills in from this process: the environment, /proc/self/exe's directory and the cache
 * directory (kept in static storage), plus the two flags given (NULL when absent). */
void paths_inputs_from_process(struct paths_inputs *in, const char *flag_python_dir,
                               const char *flag_venv);

/* Runs the three lookups. Reads the file system (stat, access, realpath) and nothing else. */
void paths_resolve(const struct paths_inputs *in, struct paths *out);

/* The chosen path of an item, or NULL when its lookup failed. */
const char *paths_get(const struct paths *p, enum paths_item item);

/* 0 when the python dir and the virtualenv were both found; else -1 and, in why, one line
 * for the error reply: what was tried and why each was passed over. */
int paths_explain_missing(const struct paths *p, char *why, size_t n);

/* The lookup report of --check and --paths: per item the choice, the rule that chose it and
 * why each earlier rule did not. Written to fd with write(2) (fd 1 only outside port mode). */
void paths_print(const struct paths *p, int fd);

#endif
