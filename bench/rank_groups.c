/*
 * rank_groups.c: what a user costs the ranking kernel (c_src/rank.c) alone, ranked one at a
 * time (recommend) or in groups (recommend_many and export, which UroRecommender.Batch makes
 * of concurrent recommends). make bench-kernel; figures in bench/README.md, "Kernel".
 *
 *   rank_groups [REPEATS]
 *
 * Per catalogue (10k and 100k items x 32 and 64 dims, N(0, 0.3) values, a seeded xorshift),
 * the same 256 users (15 banned items each, N = 10) are ranked in groups of 1, 2, 4, 8, 16
 * and 32, the group sizes alternating, REPEATS rounds (default 5); printed: the median time a
 * user took per group size, and its ratio to groups of 1 in the same run. The lists of every
 * group size are compared with those of groups of 1: exit status 1 if any differs. One CPU:
 * run it under taskset to say which.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rank.h"

#define USERS 256
#define BANS 15
#define N 10
#define ROUNDS_MAX 64

static const int64_t groups[] = {1, 2, 4, 8, 16, 32};
#define NGROUPS (int)(sizeof(groups) / sizeof(groups[0]))

static uint64_t seed = 88172645463325252ULL;

static double normal(void) /* xorshift, Box-Muller: the same numbers on every machine */
{
    double a[2];
    for (int k = 0; k < 2; k++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        a[k] = ((double)(seed >> 11) + 1.0) / 9007199254740994.0;
    }
    return sqrt(-2.0 * log(a[0])) * cos(6.283185307179586 * a[1]);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct catalogue {
    struct rank_items it;
    double *users;
    int64_t ban_ptr[USERS + 1], ban_idx[USERS * BANS];
};

static void make(struct catalogue *c, int64_t n, int d)
{
    float *v32 = malloc(sizeof(float) * (size_t)(n * d));
    double *v64 = malloc(sizeof(double) * (size_t)(n * d));
    double bound = 0;
    for (int64_t j = 0; j < n; j++) {
        double s = 0;
        for (int i = 0; i < d; i++) {
            v64[j * d + i] = 0.3 * normal();
            v32[j * d + i] = (float)v64[j * d + i];
            s += v64[j * d + i] * v64[j * d + i];
        }
        bound = sqrt(s) > bound ? sqrt(s) : bound;
    }
    c->it = (struct rank_items){v32, v64, NULL, n, d, bound};
    c->users = malloc(sizeof(double) * (size_t)(USERS * d));
    for (int64_t k = 0; k < (int64_t)USERS * d; k++)
        c->users[k] = 0.3 * normal();
    for (int b = 0; b <= USERS; b++)
        c->ban_ptr[b] = (int64_t)b * BANS;
    for (int b = 0; b < USERS; b++) /* sorted, as rank_top wants them */
        for (int k = 0; k < BANS; k++)
            c->ban_idx[b * BANS + k] = (int64_t)k * (n / BANS) + b % (n / BANS);
}

/* Every user ranked in groups of g; -> seconds. */
static double rank_all(const struct catalogue *c, int64_t g, int64_t *out)
{
    double score[32 * N];
    int64_t count[32];
    struct rank_counts counts;
    double t0 = now();
    for (int64_t s = 0; s < USERS; s += g)
        if (rank_top(&c->it, c->users + s * c->it.d, g, c->ban_ptr + s, c->ban_idx, NULL, 0, N,
                     out + s * N, score, count, &counts) != 0) {
            fprintf(stderr, "rank_groups: out of memory\n");
            exit(2);
        }
    return now() - t0;
}

static int run(int64_t n, int d, int rounds)
{
    struct catalogue c;
    make(&c, n, d);
    static int64_t lists[NGROUPS][USERS * N];
    double t[NGROUPS][ROUNDS_MAX], med[NGROUPS];
    rank_all(&c, 1, lists[0]); /* warm the caches */
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < NGROUPS; k++) {
            int at = (r % 2) ? NGROUPS - 1 - k : k; /* the order alternates */
            t[at][r] = rank_all(&c, groups[at], lists[at]) / USERS * 1e6;
        }
    int same = 1;
    printf("%6lld x %-3d |", (long long)n, d);
    for (int k = 0; k < NGROUPS; k++) {
        qsort(t[k], (size_t)rounds, sizeof(double), cmp_double);
        med[k] = t[k][rounds / 2];
        same &= memcmp(lists[k], lists[0], sizeof(lists[0])) == 0;
        printf(" %9.1f", med[k]);
    }
    printf(" |");
    for (int k = 1; k < NGROUPS; k++)
        printf(" %6.2f", med[k] / med[0]);
    printf(" | %s\n", same ? "same" : "DIFFER");
    free((void *)c.it.v32), free((void *)c.it.v64), free(c.users);
    return same;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (rounds < 1 || rounds > ROUNDS_MAX)
        rounds = 5;
    printf("us per user, median of %d rounds (group sizes alternating); ratio = group / 1;\n"
           "lists: every group size's against groups of 1\n\n", rounds);
    printf("items x dims |");
    for (int k = 0; k < NGROUPS; k++)
        printf("   g = %-3lld", (long long)groups[k]);
    printf("|");
    for (int k = 1; k < NGROUPS; k++)
        printf(" %4lld/1", (long long)groups[k]);
    printf(" | lists\n");
    int ok = 1;
    ok &= run(10000, 32, rounds);
    ok &= run(10000, 64, rounds);
    ok &= run(100000, 32, rounds);
    ok &= run(100000, 64, rounds);
    return ok ? 0 : 1;
}
