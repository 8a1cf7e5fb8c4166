/*
 * test_rank.c: cmocka tests for the ranking kernel (c_src/rank.c) in plain C.
 *
 * rank_top against a brute-force exact ranking (rank_exact of every item, ties to the lower
 * index): random items with exact ties, copies a last bit apart (the shortlist must grow),
 * bans, fewer items left than asked, a scaled (cosine) ranking, many users at once. Run plain
 * and under AddressSanitizer + UBSan. The Python side and every entry point:
 * python/tests/test_rank.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rank.h"

static uint64_t seed = 88172645463325252ULL;

static double uniform(void) /* xorshift: the same numbers on every machine */
{
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return (double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static int in_list(const int64_t *v, int64_t n, int64_t x)
{
    for (int64_t i = 0; i < n; i++)
        if (v[i] == x)
            return 1;
    return 0;
}

/* The exact top n by brute force: repeated selection of the best not yet taken. */
static int64_t brute(const struct rank_items *it, const double *u, const int64_t *ban,
                     int64_t nban, int64_t n, int64_t *out)
{
    int64_t got = 0;
    while (got < n) {
        int64_t best = -1;
        double bs = 0;
        for (int64_t j = 0; j < it->n; j++) {
            if (in_list(ban, nban, j) || in_list(out, got, j))
                continue;
            double s = rank_exact(it, u, j);
            if (best < 0 || s > bs) {
                best = j;
                bs = s;
            }
        }
        if (best < 0)
            break;
        out[got++] = best;
    }
    return got;
}

static double max_norm(const float *v, const double *scale, int64_t n, int d)
{
    double m = 0;
    for (int64_t j = 0; j < n; j++) {
        double s = 0;
        for (int i = 0; i < d; i++)
            s += (double)v[j * d + i] * v[j * d + i];
        s = sqrt(s) * (scale ? fabs(scale[j]) : 1.0);
        m = s > m ? s : m;
    }
    return m;
}

/* users x (n best) of items n_items x d with ties; compares every list with brute force. */
static void check(int64_t n_items, int d, int users, int64_t n, int scaled)
{
    float *v = malloc(sizeof(float) * (size_t)(n_items * d));
    double *scale = scaled ? malloc(sizeof(double) * (size_t)n_items) : NULL;
    for (int64_t j = 0; j < n_items * d; j++)
        v[j] = (float)uniform();
    for (int64_t j = 10; j < 40 && j < n_items; j++) /* exact ties with item 3 */
        memcpy(v + j * d, v + 3 * d, sizeof(float) * (size_t)d);
    for (int64_t j = 40; j < 80 && j < n_items; j++) { /* a last bit apart from item 5 */
        memcpy(v + j * d, v + 5 * d, sizeof(float) * (size_t)d);
        v[j * d] = nextafterf(v[5 * d], (j % 2) ? 2.0f : -2.0f);
    }
    for (int64_t j = 0; scale && j < n_items; j++)
        scale[j] = 1.0 / (1.0 + (double)(j % 7));
    struct rank_items it = {v, NULL, scale, n_items, d, max_norm(v, scale, n_items, d)};
    double *u = malloc(sizeof(double) * (size_t)(users * d));
    for (int64_t k = 0; k < (int64_t)users * d; k++)
        u[k] = uniform();
    for (int i = 0; i < d; i++) {
        u[i] = v[3 * d + i];     /* user 0 on the tied items */
        u[d + i] = v[5 * d + i]; /* user 1 on the near-ties */
    }
    /* bans: user b bans items b, b + 7, b + 14 ...; user 2 all but 3 items; shared: 1, 2 */
    int64_t *ptr = calloc((size_t)users + 1, sizeof(int64_t));
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)(users * n_items));
    for (int b = 0; b < users; b++) {
        int64_t k = ptr[b];
        for (int64_t j = b; j < n_items; j += (b == 2 ? 1 : 7))
            if (b != 2 || j < n_items - 3)
                idx[k++] = j;
        ptr[b + 1] = k;
    }
    int64_t shared[] = {1, 2};
    int64_t *out = malloc(sizeof(int64_t) * (size_t)(users * n));
    double *score = malloc(sizeof(double) * (size_t)(users * n));
    int64_t *count = malloc(sizeof(int64_t) * (size_t)users);
    int64_t *want = malloc(sizeof(int64_t) * (size_t)n);
    int64_t *ban = malloc(sizeof(int64_t) * (size_t)(n_items + 2));
    struct rank_counts counts;
    assert_int_equal(rank_top(&it, u, users, ptr, idx, shared, 2, n, out, score, count, &counts),
                     0);
    for (int b = 0; b < users; b++) {
        int64_t nban = ptr[b + 1] - ptr[b];
        memcpy(ban, idx + ptr[b], sizeof(int64_t) * (size_t)nban);
        ban[nban] = 1;
        ban[nban + 1] = 2;
        int64_t got = brute(&it, u + (int64_t)b * d, ban, nban + 2, n, want);
        assert_int_equal(count[b], got);
        for (int64_t i = 0; i < got; i++) {
            assert_int_equal(out[b * n + i], want[i]);
            assert_true(score[b * n + i] == rank_exact(&it, u + (int64_t)b * d, want[i]));
        }
    }
    free(v), free(scale), free(u), free(ptr), free(idx), free(out), free(score), free(count);
    free(want), free(ban);
}

static void test_lists_equal_brute_force(void **state)
{
    (void)state;
    check(500, 8, 5, 10, 0);
    check(700, 32, 11, 25, 0);
    check(300, 13, 9, 5, 0); /* a width that is not a multiple of the lanes */
    check(90, 3, 4, 200, 0); /* asks for more than there are */
}

static void test_scaled_lists_equal_brute_force(void **state)
{
    (void)state;
    check(600, 16, 9, 10, 1);
}

static void test_near_ties_make_the_shortlist_grow(void **state)
{
    (void)state;
    /* 2000 copies of one row, each a few last bits apart: float32 cannot rank them */
    int d = 8;
    int64_t n_items = 2000;
    float *v = malloc(sizeof(float) * (size_t)(n_items * d));
    for (int64_t j = 0; j < n_items; j++) {
        for (int i = 0; i < d; i++)
            v[j * d + i] = 0.5f;
        for (int64_t k = 0; k < j % 13; k++)
            v[j * d] = nextafterf(v[j * d], 1.0f);
    }
    struct rank_items it = {v, NULL, NULL, n_items, d, max_norm(v, NULL, n_items, d)};
    double u[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    int64_t ptr[2] = {0, 0}, out[20], want[20], count;
    double score[20];
    struct rank_counts counts;
    assert_int_equal(rank_top(&it, u, 1, ptr, NULL, NULL, 0, 20, out, score, &count, &counts), 0);
    assert_true(counts.widened == 1);
    assert_int_equal(brute(&it, u, NULL, 0, 20, want), 20);
    assert_int_equal(count, 20);
    for (int i = 0; i < 20; i++)
        assert_int_equal(out[i], want[i]);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lists_equal_brute_force),
        cmocka_unit_test(test_scaled_lists_equal_brute_force),
        cmocka_unit_test(test_near_ties_make_the_shortlist_grow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
