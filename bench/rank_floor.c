/*
 * rank_floor.c: the C floor of bench/catalogue_bench.py. The top n of float32 dot products
 * with a bounded heap, nothing else (no exclusions, no exact pass, no Python): what ranking a
 * catalogue cannot be faster than on this CPU. Built -O3 -march=native (FMA allowed).
 *
 *   rank_floor ITEMS.npy USERS.f32 N REPEATS   -> prints one time per user, in microseconds
 *
 * ITEMS.npy: float32 (items, d), C order (the port's own serving/items32.npy); USERS.f32: raw
 * float32 rows of d values. Each user is ranked REPEATS times; every time is printed.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

typedef float lanes __attribute__((vector_size(32), aligned(4)));

/* lanes is declared aligned(4): a row may be read through it at any float offset */
#define LOAD(p) (*(const lanes *)(const void *)(p))

static float hsum(lanes a)
{
    float s = 0;
    for (int i = 0; i < 8; i++)
        s += a[i];
    return s;
}

struct heap { float *key; int64_t *idx; int size, cap; };

static void offer(struct heap *h, float key, int64_t idx)
{
    int at;
    if (h->size < h->cap) {
        at = h->size++;
        h->key[at] = key;
        h->idx[at] = idx;
        while (at > 0 && h->key[at] < h->key[(at - 1) / 2]) {
            int up = (at - 1) / 2;
            float k = h->key[at]; int64_t i = h->idx[at];
            h->key[at] = h->key[up]; h->idx[at] = h->idx[up];
            h->key[up] = k; h->idx[up] = i;
            at = up;
        }
        return;
    }
    if (key <= h->key[0])
        return;
    h->key[0] = key;
    h->idx[0] = idx;
    at = 0;
    for (;;) {
        int l = 2 * at + 1, r = l + 1, w = at;
        if (l < h->size && h->key[l] < h->key[w]) w = l;
        if (r < h->size && h->key[r] < h->key[w]) w = r;
        if (w == at) break;
        float k = h->key[at]; int64_t i = h->idx[at];
        h->key[at] = h->key[w]; h->idx[at] = h->idx[w];
        h->key[w] = k; h->idx[w] = i;
        at = w;
    }
}

static void rank(const float *v, int64_t n, int d, const float *u, struct heap *h)
{
    h->size = 0;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *b0 = v + j * d, *b1 = b0 + d, *b2 = b1 + d, *b3 = b2 + d;
        lanes s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        for (int i = 0; i + 8 <= d; i += 8) {
            lanes x = LOAD(u + i);
            s0 += x * LOAD(b0 + i);
            s1 += x * LOAD(b1 + i);
            s2 += x * LOAD(b2 + i);
            s3 += x * LOAD(b3 + i);
        }
        offer(h, hsum(s0), j);
        offer(h, hsum(s1), j + 1);
        offer(h, hsum(s2), j + 2);
        offer(h, hsum(s3), j + 3);
    }
    for (; j < n; j++) {
        float s = 0;
        for (int i = 0; i < d; i++)
            s += u[i] * v[j * d + i];
        offer(h, s, j);
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: rank_floor ITEMS.npy USERS.f32 N REPEATS\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) { perror(argv[1]); return 1; }
    const char *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) { perror("mmap"); return 1; }
    /* .npy v1: magic(6) version(2) header_len(2, LE) header; the shape is in the header */
    unsigned hlen = (unsigned char)map[8] | (unsigned char)map[9] << 8;
    const char *shape = strstr(map + 10, "'shape': (");
    long long n = 0, d = 0;
    if (!shape || sscanf(shape, "'shape': (%lld, %lld)", &n, &d) != 2 || d % 8) {
        fprintf(stderr, "rank_floor: %s: not an (n, d) float32 .npy with d a multiple of 8\n",
                argv[1]);
        return 1;
    }
    const float *v = (const float *)(map + 10 + hlen);
    FILE *uf = fopen(argv[2], "rb");
    if (!uf) { perror(argv[2]); return 1; }
    int top = atoi(argv[3]), repeats = atoi(argv[4]);
    float *u = malloc(sizeof(float) * (size_t)d);
    struct heap h = {malloc(sizeof(float) * (size_t)top), malloc(sizeof(int64_t) * (size_t)top),
                     0, top};
    double sink = 0;
    while (fread(u, sizeof(float), (size_t)d, uf) == (size_t)d) {
        for (int r = 0; r < repeats; r++) {
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            rank(v, n, (int)d, u, &h);
            clock_gettime(CLOCK_MONOTONIC, &b);
            double us = (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3;
            sink += h.key[0];
            printf("%.2f\n", us);
        }
    }
    fprintf(stderr, "(checksum %g)\n", sink);
    return 0;
}
