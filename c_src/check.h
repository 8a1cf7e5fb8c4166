/*
 * check.h: `uro_recommender --check`, the self-test a person runs at a terminal.
 */
#ifndef URO_CHECK_H
#define URO_CHECK_H

#include "paths.h"
#include "pybridge.h"

/* Prints the lookup of paths.c, then one line per check; returns the process exit status
 * (0 when all passed). */
int check_main(const struct pybridge_config *py, const struct paths *paths);

/* Human output on fd 1: only for --help, --version, --paths and --check. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
