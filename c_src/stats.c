/*
 * stats.c: counters and latency histograms reported by `info` (see stats.h).
 *
 * Latencies go into a log-linear histogram (8 sub-buckets per power of two, so quantiles are
 * within 12.5%) per command: fixed memory, O(1) to record, no allocation on the hot path.
 * Names are copied into their slot the first time they are seen and compared by text.
 */
#include "stats.h"

#include "term.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SUB_BITS 3
#define SUB (1 << SUB_BITS)
#define BUCKETS (64 * SUB)
#define MAX_NAMES 32

struct histogram {
    const char *name;
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint32_t buckets[BUCKETS];
};

struct counter {
    const char *name;
    uint64_t count;
};

static uint64_t started_us;
static uint64_t requests;
static struct histogram histograms[MAX_NAMES];
static struct counter errors[MAX_NAMES];

uint64_t stats_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void stats_init(void)
{
    started_us = stats_now_us();
}

static int bucket_of(uint64_t v)
{
    if (v < SUB)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int sub = (int)((v >> (msb - SUB_BITS)) & (SUB - 1));
    return (msb - SUB_BITS + 1) * SUB + sub;
}

/* The upper edge of a bucket: a quantile never under-reports. */
static uint64_t bucket_top(int b)
{
    if (b < SUB)
        return (uint64_t)b;
    int msb = b / SUB + SUB_BITS - 1;
    uint64_t sub = (uint64_t)(b % SUB);
    return ((SUB + sub + 1) << (msb - SUB_BITS)) - 1;
}

static void *slot_for(void *table, size_t stride, const char *name)
{
    for (int i = 0; i < MAX_NAMES; i++) {
        const char **slot = (const char **)((char *)table + i * stride);
        if (*slot && strcmp(*slot, name) == 0)
            return slot;
        if (!*slot) {
            /* A copy: some names (PortError kinds) live in buffers that are reused. */
            *slot = strdup(name);
            return *slot ? slot : NULL;
        }
    }
    return NULL;
}

void stats_record(const char *command, uint64_t micros, const char *error_kind)
{
    requests++;
    struct histogram *h = slot_for(histograms, sizeof(*histograms), command);
    if (h) {
        h->count++;
        h->sum += micros;
        if (micros > h->max)
            h->max = micros;
        h->buckets[bucket_of(micros)]++;
    }
    if (error_kind) {
        struct counter *c = slot_for(errors, sizeof(*errors), error_kind);
        if (c)
            c->count++;
    }
}

static uint64_t quantile(const struct histogram *h, double q)
{
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen >= rank) {
            uint64_t top = bucket_top(b);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

static int put(PyObject *dict, const char *key, PyObject *value)
{
    PyObject *k = term_make_atom(key, (Py_ssize_t)strlen(key));
    int rc = k && value ? PyDict_SetItem(dict, k, value) : -1;
    Py_XDECREF(k);
    Py_XDECREF(value);
    return rc;
}

static PyObject *latency_of(const struct histogram *h)
{
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    if (put(d, "count", PyLong_FromUnsignedLongLong(h->count)) < 0 ||
        put(d, "mean_us", PyLong_FromUnsignedLongLong(h->sum / (h->count ? h->count : 1))) < 0 ||
        put(d, "p50_us", PyLong_FromUnsignedLongLong(quantile(h, 0.50))) < 0 ||
        put(d, "p99_us", PyLong_FromUnsignedLongLong(quantile(h, 0.99))) < 0 ||
        put(d, "max_us", PyLong_FromUnsignedLongLong(h->max)) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

int stats_fill(PyObject *dict)
{
    PyObject *errs = PyDict_New();
    PyObject *lat = PyDict_New();
    if (!errs || !lat)
        goto fail;
    for (int i = 0; i < MAX_NAMES && errors[i].name; i++)
        if (put(errs, errors[i].name, PyLong_FromUnsignedLongLong(errors[i].count)) < 0)
            goto fail;
    for (int i = 0; i < MAX_NAMES && histograms[i].name; i++)
        if (put(lat, histograms[i].name, latency_of(&histograms[i])) < 0)
            goto fail;
    if (put(dict, "pid", PyLong_FromLong((long)getpid())) < 0 ||
        put(dict, "uptime_ms", PyLong_FromUnsignedLongLong((stats_now_us() - started_us) / 1000)) < 0 ||
        put(dict, "requests", PyLong_FromUnsignedLongLong(requests)) < 0)
        goto fail;
    if (put(dict, "errors", errs) < 0) {
        errs = NULL;
        goto fail;
    }
    return put(dict, "latency", lat);
fail:
    Py_XDECREF(errs);
    Py_XDECREF(lat);
    return -1;
}

long stats_resident_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}
