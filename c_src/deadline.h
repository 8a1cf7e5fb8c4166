/*
 * deadline.h: per-call deadlines (CallOpts timeout_ms).
 *
 * A watchdog thread waits for the deadline of the call in progress. If the call is still in
 * Python when it passes, the watchdog takes the GIL (the interpreter hands it over every
 * few milliseconds) and raises _uro_port.CallTimeout asynchronously in the main thread,
 * which sees it at the next bytecode boundary. CallTimeout derives from BaseException so `except Exception` in library code
 * does not swallow it. A call stuck inside one long C function (a single BLAS product, a
 * TensorFlow session run) is interrupted only when that function returns to Python. The
 * database's waits do not rely on it: they end at deadline_due_us themselves (db_wait.c) and
 * raise with deadline_raise_now.
 */
#ifndef URO_DEADLINE_H
#define URO_DEADLINE_H

#include "pytypes.h"
#include <stdint.h>

int deadline_start(void);                    /* starts the watchdog thread; 0 or -1 */
int deadline_module_init(PyObject *module);  /* adds CallTimeout to _uro_port */
void deadline_arm(long timeout_ms);          /* before a Python call; <= 0 means none */
void deadline_disarm(void);                  /* after it */

/* The armed call's deadline on stats_now_us's clock (CLOCK_MONOTONIC, microseconds), or 0
 * when no deadline is armed. Any thread may ask: the database waits of an export's writer
 * threads end at the call's deadline too (c_src/db_wait.c). */
uint64_t deadline_due_us(void);
/* A C wait saw the call's deadline pass before the watchdog struck: sets CallTimeout as the
 * current exception of this thread and marks the call as timed out (deadline_take_expired
 * then answers 1), so the watchdog does not strike again. With the GIL; returns NULL. */
PyObject *deadline_raise_now(void);

/* True if the pending exception is the deadline of the call just made (then clears it). */
int deadline_take_expired(void);

#endif
