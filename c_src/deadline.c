/*
 * deadline.c: the watchdog behind CallOpts timeout_ms (see deadline.h).
 *
 * Calls are numbered. The watchdog raises only for the number it was armed with, checked
 * again once it holds the GIL, and disarming withdraws an exception the interpreter has not
 * yet seen, so a deadline that passes just as its call returns never strikes the next call.
 */
#include "deadline.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static uint64_t call_number;    /* of the armed call; 0 when none */
static uint64_t next_number = 1;
static struct timespec due;
static int fired;               /* the armed call's deadline raised */
static PyObject *call_timeout;  /* _uro_port.CallTimeout */
static unsigned long main_thread;

/* Runs on the watchdog, without our lock (the main thread may need it while holding the GIL).
 * Py_AddPendingCall would be simpler, but in 3.11 a pending call added from a thread other
 * than the main one does not set the eval breaker, so it waits for some unrelated GIL drop.
 * An asynchronous exception does set it. */
static void interrupt(uint64_t n)
{
    PyGILState_STATE g = PyGILState_Ensure();
    pthread_mutex_lock(&lock);
    /* Not when a database wait already raised it in C (deadline_raise_now). */
    int current = call_number == n && !fired;
    if (current) {
        fired = 1;
        PyThreadState_SetAsyncExc(main_thread, call_timeout);
    }
    pthread_mutex_unlock(&lock);
    PyGILState_Release(g);
}

static int before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void *watch(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&lock);
    for (;;) {
        if (!call_number) {
            pthread_cond_wait(&changed, &lock);
            continue;
        }
        uint64_t n = call_number;
        struct timespec when = due;
        int rc = pthread_cond_timedwait(&changed, &lock, &when);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (rc == ETIMEDOUT && call_number == n && !before(&now, &when)) {
            pthread_mutex_unlock(&lock);
            interrupt(n);
            pthread_mutex_lock(&lock);
            /* Once per call: wait for the next arm. */
            while (call_number == n)
                pthread_cond_wait(&changed, &lock);
        }
    }
    return NULL;
}

int deadline_start(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_destroy(&changed);
    pthread_cond_init(&changed, &attr);
    pthread_condattr_destroy(&attr);
    pthread_t thread;
    if (pthread_create(&thread, NULL, watch, NULL) != 0)
        return -1;
    pthread_detach(thread);
    return 0;
}

int deadline_module_init(PyObject *module)
{
    if (!call_timeout) {
        call_timeout = PyErr_NewExceptionWithDoc(
            "_uro_port.CallTimeout", "The call's timeout_ms passed (raised by the port).",
            PyExc_BaseException, NULL);
        if (!call_timeout)
            return -1;
    }
    return PyModule_AddObjectRef(module, "CallTimeout", call_timeout);
}

void deadline_arm(long timeout_ms)
{
    if (timeout_ms <= 0)
        return;
    pthread_mutex_lock(&lock);
    clock_gettime(CLOCK_MONOTONIC, &due);
    due.tv_sec += timeout_ms / 1000;
    due.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (due.tv_nsec >= 1000000000L) {
        due.tv_sec++;
        due.tv_nsec -= 1000000000L;
    }
    call_number = next_number++;
    main_thread = PyThread_get_thread_ident();
    fired = 0;
    pthread_cond_signal(&changed);
    pthread_mutex_unlock(&lock);
}

void deadline_disarm(void)
{
    pthread_mutex_lock(&lock);
    if (call_number) {
        call_number = 0;
        pthread_cond_signal(&changed);
        /* The call may have returned before the interpreter noticed the exception: withdraw
         * it, or it would strike the next call. (We hold the GIL here.) */
        if (fired)
            PyThreadState_SetAsyncExc(main_thread, NULL);
    }
    pthread_mutex_unlock(&lock);
}

int deadline_take_expired(void)
{
    pthread_mutex_lock(&lock);
    int was = fired;
    fired = 0;
    pthread_mutex_unlock(&lock);
    if (was && call_timeout && PyErr_ExceptionMatches(call_timeout)) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

uint64_t deadline_due_us(void)
{
    pthread_mutex_lock(&lock);
    uint64_t us = call_number ? (uint64_t)due.tv_sec * 1000000u + (uint64_t)due.tv_nsec / 1000u : 0;
    pthread_mutex_unlock(&lock);
    return us;
}

PyObject *deadline_raise_now(void)
{
    pthread_mutex_lock(&lock);
    if (call_number) {
        /* An asynchronous exception the watchdog already set would strike again in the
         * handler that cleans up after this one: withdraw it (it can only be the main
         * thread's; a writer thread leaves it to the main thread's own wait). */
        if (fired && PyThread_get_thread_ident() == main_thread)
            PyThreadState_SetAsyncExc(main_thread, NULL);
        fired = 1;
    }
    pthread_mutex_unlock(&lock);
    PyErr_SetString(call_timeout, "the call's timeout_ms passed while waiting for the database");
    return NULL;
}
