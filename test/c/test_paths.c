/*
 * test_paths.c: cmocka tests for the lookup of the python dir, the virtualenv and the SQL
 * files (c_src/paths.c), on a real directory tree made in /tmp for each test:
 *
 *   T/inst/                    an installed tree's exe_dir: python/uro_rec, venv/, sql/
 *   T/checkout/priv (the exe_dir of a checkout), T/checkout/python/uro_rec, T/checkout/priv/sql
 *   T/cache/uro_recommender/venv-abc   the developer cache
 *   T/other/python/uro_rec, T/other/venv   what a flag or the environment names
 *
 * The order (flag > env > exe-relative > cache), an explicit setting being final, the reasons
 * given for what was passed over, and the failure text a call then answers with. The whole
 * path, a moved tree with the checkout and the cache hidden, is test/relocate.sh's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "paths.h"

static char root[64];
static struct paths found; /* 50 KiB: not on the stack */

static void touch(const char *rel, mode_t mode)
{
    char path[PATH_MAX], cmd[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\n", f);
    fclose(f);
    chmod(path, mode);
}

static void make_venv(const char *rel)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/pyvenv.cfg", rel);
    touch(p, 0644);
    snprintf(p, sizeof(p), "%s/bin/python", rel);
    touch(p, 0755);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof(root), "/tmp/uro_test_paths.XXXXXX");
    assert_non_null(mkdtemp(root));
    touch("inst/python/uro_rec/__init__.py", 0644);
    touch("inst/sql/001.sql", 0644);
    make_venv("inst/venv");
    touch("checkout/python/uro_rec/__init__.py", 0644);
    touch("checkout/priv/sql/001.sql", 0644);
    make_venv("cache/uro_recommender/venv-abc");
    touch("other/python/uro_rec/__init__.py", 0644);
    make_venv("other/venv");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    return system(cmd);
}

static const char *at(const char *rel)
{
    static char buf[4][PATH_MAX];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, PATH_MAX, "%s/%s", root, rel);
    return b;
}

/* Inputs with nothing given: exe_dir and the cache as a test says. */
static struct paths_inputs inputs(const char *exe_rel)
{
    struct paths_inputs in = {0};
    in.exe_dir = exe_rel ? at(exe_rel) : NULL;
    in.cache_home = at("cache");
    in.venv_hash = "abc";
    return in;
}

static void assert_chosen(enum paths_item item, const char *rel, int rule)
{
    const struct paths_lookup *l = &found.item[item];
    assert_non_null(paths_get(&found, item));
    assert_string_equal(paths_get(&found, item), at(rel));
    assert_int_equal(l->chosen, rule - 1);
    assert_int_equal(l->n, rule); /* later rules are not tried */
}

static void test_installed_tree_finds_everything_beside_itself(void **state)
{
    (void)state;
    struct paths_inputs in = inputs("inst");
    paths_resolve(&in, &found);
    assert_chosen(PATHS_PYTHON_DIR, "inst/python", 3);
    assert_chosen(PATHS_VENV, "inst/venv", 3);
    assert_chosen(PATHS_SQL_DIR, "inst/sql", 1);
    assert_string_equal(found.item[PATHS_VENV].tried[0].why_not, "not given");
    assert_string_equal(found.item[PATHS_VENV].tried[1].why_not, "not set");
    char why[1024];
    assert_int_equal(paths_explain_missing(&found, why, sizeof(why)), 0);
}

static void test_checkout_falls_back_to_parent_python_and_the_cache(void **state)
{
    (void)state;
    struct paths_inputs in = inputs("checkout/priv");
    paths_resolve(&in, &found);
    assert_chosen(PATHS_PYTHON_DIR, "checkout/python", 4);
    assert_string_equal(found.item[PATHS_PYTHON_DIR].tried[2].why_not, "no such directory");
    assert_chosen(PATHS_VENV, "cache/uro_recommender/venv-abc", 4);
    assert_chosen(PATHS_SQL_DIR, "checkout/priv/sql", 2);
}

static void test_env_beats_exe_relative(void **state)
{
    (void)state;
    struct paths_inputs in = inputs("inst");
    in.env_python_dir = at("other/python");
    in.env_venv = at("other/venv");
    paths_resolve(&in, &found);
    assert_chosen(PATHS_PYTHON_DIR, "other/python", 2);
    assert_chosen(PATHS_VENV, "other/venv", 2);
    /* the SQL files follow the python dir: other/sql does not exist, nor other/priv/sql */
    assert_null(paths_get(&found, PATHS_SQL_DIR));
    assert_int_equal(found.item[PATHS_SQL_DIR].n, 2);
}

static void test_flag_beats_env(void **state)
{
    (void)state;
    struct paths_inputs in = inputs("inst");
    in.env_venv = at("inst/venv");
    in.flag_venv = at("other/venv");
    in.env_python_dir = at("inst/python");
    in.flag_python_dir = at("other/python");
    paths_resolve(&in, &found);
    assert_chosen(PATHS_VENV, "other/venv", 1);
    assert_chosen(PATHS_PYTHON_DIR, "other/python", 1);
}

/* A misconfigured URO_REC_VENV fails loudly even though inst/venv would do. */
static void test_explicit_setting_is_final(void **state)
{
    (void)state;
    struct paths_inputs in = inputs("inst");
    in.env_venv = at("other/python"); /* a directory, but no virtualenv */
    paths_resolve(&in, &found);
    const struct paths_lookup *l = &found.item[PATHS_VENV];
    assert_null(paths_get(&found, PATHS_VENV));
    assert_int_equal(l->chosen, -1);
    assert_int_equal(l->n, 2);
    assert_non_null(strstr(l->tried[1].why_not, "pyvenv.cfg"));
    char why[2048];
    assert_int_equal(paths_explain_missing(&found, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "no usable virtualenv"));
    assert_non_null(strstr(why, "URO_REC_VENV"));
    assert_non_null(strstr(why, at("other/python")));
}

/* A venv copied without its base interpreter: bin/python is a dangling symlink. */
static void test_venv_without_interpreter_is_passed_over(void **state)
{
    (void)state;
    touch("broken/venv/pyvenv.cfg", 0644);
    touch("broken/venv/bin/README", 0644);
    assert_int_equal(symlink("/nonexistent/python3.11", at("broken/venv/bin/python")), 0);
    touch("broken/python/uro_rec/__init__.py", 0644);
    struct paths_inputs in = inputs("broken");
    paths_resolve(&in, &found);
    assert_chosen(PATHS_PYTHON_DIR, "broken/python", 3);
    assert_chosen(PATHS_VENV, "cache/uro_recommender/venv-abc", 4);
    assert_non_null(strstr(found.item[PATHS_VENV].tried[2].why_not, "bin/python"));
}

static void test_nothing_found_explains_every_rule(void **state)
{
    (void)state;
    struct paths_inputs in = inputs(NULL);
    in.cache_home = NULL;
    paths_resolve(&in, &found);
    assert_null(paths_get(&found, PATHS_VENV));
    assert_null(paths_get(&found, PATHS_PYTHON_DIR));
    assert_null(paths_get(&found, PATHS_SQL_DIR));
    assert_string_equal(found.item[PATHS_SQL_DIR].tried[0].why_not, "no python dir was found");
    char why[4096];
    assert_int_equal(paths_explain_missing(&found, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "no usable virtualenv: --venv not given; URO_REC_VENV not set; "
                                "<exe_dir>/venv executable's directory unknown"));
    assert_non_null(strstr(why, ". no usable python dir: --python-dir not given"));
    /* a short buffer truncates, never overflows */
    char small[16];
    assert_int_equal(paths_explain_missing(&found, small, sizeof(small)), -1);
    assert_int_equal(strlen(small), sizeof(small) - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_installed_tree_finds_everything_beside_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkout_falls_back_to_parent_python_and_the_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_beats_exe_relative, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_beats_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_explicit_setting_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_venv_without_interpreter_is_passed_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_found_explains_every_rule, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
