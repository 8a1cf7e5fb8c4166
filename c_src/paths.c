/*
 * paths.c: the lookup of the python dir, the virtualenv and the SQL files (see paths.h).
 *
 * Each lookup is a short list of rules tried in order. A rule names a path (or nothing: a
 * flag not given, a variable not set); a probe says whether that path is usable and, if not,
 * why. The report keeps every rule tried, so --check can say why the earlier ones lost and
 * an error reply can list what was tried.
 */
#define _GNU_SOURCE
#include "paths.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef URO_REC_VENV_HASH
#define URO_REC_VENV_HASH ""
#endif

/* A probe: NULL when dir is usable, else the reason it is not (static text). */
typedef const char *(*probe_fn)(const char *dir);

static const char *not_a_directory(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        return "no such directory";
    return S_ISDIR(st.st_mode) ? NULL : "not a directory";
}

/* Access to dir/name with mode, without a buffer overflow on long paths. */
static int has(const char *dir, const char *name, int mode)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return 0;
    return access(path, mode) == 0;
}

static const char *probe_python_dir(const char *dir)
{
    const char *why = not_a_directory(dir);
    if (!why && !has(dir, "uro_rec/__init__.py", R_OK))
        why = "no uro_rec/__init__.py in it";
    return why;
}

/* Usable: a virtualenv (pyvenv.cfg) whose bin/python runs. access(X_OK) follows the symlink
 * to the base interpreter, so a venv whose interpreter is gone (copied to a machine without
 * python3.11) is passed over here instead of failing later inside CPython's start-up. */
static const char *probe_venv(const char *dir)
{
    const char *why = not_a_directory(dir);
    if (!why && !has(dir, "pyvenv.cfg", R_OK))
        why = "no pyvenv.cfg in it (not a virtualenv)";
    if (!why && !has(dir, "bin/python", X_OK))
        why = "bin/python missing or not executable (is its base interpreter installed?)";
    return why;
}

/* The same test as apply_schema's in python/uro_rec/schema.py: a directory. */
static const char *probe_sql_dir(const char *dir)
{
    return not_a_directory(dir);
}

/* Tries one rule. path is what the rule names (NULL or "" for nothing, then absent says
 * why). Implicit paths are shown resolved (realpath) when they exist; explicit ones as given.
 * Returns 1 when the lookup ends here: a hit, or an explicit setting that is not usable. */
static int try_rule(struct paths_lookup *l, const char *rule, const char *path, int is_explicit,
                    probe_fn probe, const char *absent)
{
    struct paths_candidate *c = &l->tried[l->n++];
    c->rule = rule;
    c->path[0] = '\0';
    if (!path || !*path) {
        c->why_not = absent;
        return 0;
    }
    if (is_explicit || !realpath(path, c->path))
        snprintf(c->path, sizeof(c->path), "%s", path);
    c->why_not = probe(c->path);
    if (!c->why_not)
        l->chosen = l->n - 1;
    return !c->why_not || is_explicit;
}

/* base/suffix, or NULL when base is unknown (the rule then names nothing). */
static const char *join(char *buf, size_t n, const char *base, const char *suffix)
{
    if (!base || !*base || snprintf(buf, n, "%s/%s", base, suffix) >= (int)n)
        return NULL;
    return buf;
}

struct rule {
    const char *name;
    const char *path;   /* NULL: the rule names nothing this time */
    int is_explicit;
    const char *absent; /* why, when path is NULL */
};

/* Tries rules in order until one ends the lookup. */
static void run_rules(struct paths_lookup *l, const char *what, const struct rule *rules,
                      int n, probe_fn probe)
{
    memset(l, 0, sizeof(*l));
    l->what = what;
    l->chosen = -1;
    for (int i = 0; i < n && i < PATHS_MAX_RULES; i++)
        if (try_rule(l, rules[i].name, rules[i].path, rules[i].is_explicit, probe, rules[i].absent))
            return;
}

#define UNKNOWN_EXE "executable's directory unknown"

static void find_python_dir(const struct paths_inputs *in, struct paths_lookup *l)
{
    char a[PATH_MAX], b[PATH_MAX];
    const struct rule rules[] = {
        {"--python-dir", in->flag_python_dir, 1, "not given"},
        {"URO_REC_PYTHON_DIR", in->env_python_dir, 1, "not set"},
        {"<exe_dir>/python", join(a, sizeof(a), in->exe_dir, "python"), 0, UNKNOWN_EXE},
        {"<exe_dir>/../python", join(b, sizeof(b), in->exe_dir, "../python"), 0, UNKNOWN_EXE},
    };
    run_rules(l, "python dir", rules, 4, probe_python_dir);
}

static void find_venv(const struct paths_inputs *in, struct paths_lookup *l)
{
    char a[PATH_MAX], b[PATH_MAX], name[128];
    const char *dev = NULL;
    if (in->venv_hash && *in->venv_hash &&
        snprintf(name, sizeof(name), "uro_recommender/venv-%s", in->venv_hash) < (int)sizeof(name))
        dev = join(b, sizeof(b), in->cache_home, name);
    const struct rule rules[] = {
        {"--venv", in->flag_venv, 1, "not given"},
        {"URO_REC_VENV", in->env_venv, 1, "not set"},
        {"<exe_dir>/venv", join(a, sizeof(a), in->exe_dir, "venv"), 0, UNKNOWN_EXE},
        {"<cache>/uro_recommender/venv-<hash>", dev, 0,
         in->venv_hash && *in->venv_hash ? "neither XDG_CACHE_HOME nor HOME is set"
                                         : "no <hash> was compiled in"},
    };
    run_rules(l, "virtualenv", rules, 4, probe_venv);
}

static void find_sql_dir(const char *python_dir, struct paths_lookup *l)
{
    char a[PATH_MAX], b[PATH_MAX];
    const char *absent = "no python dir was found";
    const struct rule rules[] = {
        {"<python_dir>/../sql", join(a, sizeof(a), python_dir, "../sql"), 0, absent},
        {"<python_dir>/../priv/sql", join(b, sizeof(b), python_dir, "../priv/sql"), 0, absent},
    };
    run_rules(l, "SQL files", rules, 2, probe_sql_dir);
}

void paths_resolve(const struct paths_inputs *in, struct paths *out)
{
    snprintf(out->exe_dir, sizeof(out->exe_dir), "%s", in->exe_dir ? in->exe_dir : "");
    snprintf(out->cache_home, sizeof(out->cache_home), "%s", in->cache_home ? in->cache_home : "");
    snprintf(out->venv_hash, sizeof(out->venv_hash), "%s", in->venv_hash ? in->venv_hash : "");
    find_python_dir(in, &out->item[PATHS_PYTHON_DIR]);
    find_venv(in, &out->item[PATHS_VENV]);
    find_sql_dir(paths_get(out, PATHS_PYTHON_DIR), &out->item[PATHS_SQL_DIR]);
}

const char *paths_get(const struct paths *p, enum paths_item item)
{
    const struct paths_lookup *l = &p->item[item];
    return l->chosen >= 0 ? l->tried[l->chosen].path : NULL;
}

void paths_inputs_from_process(struct paths_inputs *in, const char *flag_python_dir,
                               const char *flag_venv)
{
    static char exe_dir[PATH_MAX], cache_home[PATH_MAX];
    memset(in, 0, sizeof(*in));
    in->flag_python_dir = flag_python_dir;
    in->flag_venv = flag_venv;
    in->env_python_dir = getenv("URO_REC_PYTHON_DIR");
    in->env_venv = getenv("URO_REC_VENV");
    in->venv_hash = URO_REC_VENV_HASH;

    /* The kernel's answer: symlinks to the executable resolved, wherever it was moved. */
    ssize_t n = readlink("/proc/self/exe", exe_dir, sizeof(exe_dir) - 1);
    char *slash = n > 0 ? (exe_dir[n] = '\0', strrchr(exe_dir, '/')) : NULL;
    if (slash) {
        *slash = '\0';
        in->exe_dir = exe_dir;
    }
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        in->cache_home = xdg;
    else if (home && *home &&
             snprintf(cache_home, sizeof(cache_home), "%s/.cache", home) < (int)sizeof(cache_home))
        in->cache_home = cache_home;
}

static size_t explain(const struct paths_lookup *l, char *buf, size_t n)
{
    size_t used = (size_t)snprintf(buf, n, "no usable %s:", l->what);
    for (int i = 0; i < l->n && used < n; i++) {
        const struct paths_candidate *c = &l->tried[i];
        used += (size_t)snprintf(buf + used, n - used, "%s %s %s%s%s", i ? ";" : "", c->rule,
                                 c->path, c->path[0] ? ": " : "", c->why_not ? c->why_not : "");
    }
    return used < n ? used : n;
}

int paths_explain_missing(const struct paths *p, char *why, size_t n)
{
    size_t used = 0;
    why[0] = '\0';
    if (!paths_get(p, PATHS_VENV))
        used = explain(&p->item[PATHS_VENV], why, n);
    if (!paths_get(p, PATHS_PYTHON_DIR) && used + 3 < n) {
        if (used)
            used += (size_t)snprintf(why + used, n - used, ". ");
        explain(&p->item[PATHS_PYTHON_DIR], why + used, n - used);
    }
    return why[0] ? -1 : 0;
}

void paths_print(const struct paths *p, int fd)
{
    dprintf(fd, "where files are looked up (first usable one wins; an explicit setting is "
                "final):\n");
    dprintf(fd, "  <exe_dir> = %s, <cache> = %s, <hash> = %s\n", p->exe_dir[0] ? p->exe_dir : "?",
            p->cache_home[0] ? p->cache_home : "?", p->venv_hash[0] ? p->venv_hash : "?");
    for (int item = 0; item < PATHS_N; item++) {
        const struct paths_lookup *l = &p->item[item];
        const char *chosen = paths_get(p, (enum paths_item)item);
        if (chosen)
            dprintf(fd, "  %-11s %s   (by %s)\n", l->what, chosen, l->tried[l->chosen].rule);
        else
            dprintf(fd, "  %-11s NOT FOUND\n", l->what);
        for (int i = 0; i < l->n; i++) {
            const struct paths_candidate *c = &l->tried[i];
            dprintf(fd, "      %d. %-36s %s%s%s\n", i + 1, c->rule, c->path,
                    c->path[0] ? (c->why_not ? ": " : "") : "",
                    c->why_not ? c->why_not : "  <- chosen");
        }
    }
}
