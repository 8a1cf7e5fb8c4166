/*
 * stats.h: what the port counts about itself for `info`: requests, replies by error kind,
 * and a latency histogram per command.
 */
#ifndef URO_STATS_H
#define URO_STATS_H

#include "pytypes.h"
#include <stdint.h>

void stats_init(void);
uint64_t stats_now_us(void);               /* monotonic clock */
/* Records one reply: error_kind is NULL for {ok, _}. */
void stats_record(const char *command, uint64_t micros, const char *error_kind);
long stats_resident_kib(void);              /* resident memory now, from /proc */
/* Adds pid, uptime_ms, requests, errors and latency to dict (Atom keys). 0 or -1. */
int stats_fill(PyObject *dict);

#endif
