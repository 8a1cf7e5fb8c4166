/*
 * test_rank.c: cmocka tests for the ranking kernel (c_src/rank.c) in plain C.
 *
 * rank_top against a brute-force exact ranking (rank_exact of every item, ties to the lower
 * index): random items with exact ties, copies a last bit apart (the shortlist must grow),
 * bans, fewer items left than asked, a scaled (cosine) ranking, many users at once (more
 * than one group), each also in the float32 pass's baseline build; and the float32 pass
 * itself: groups of users against each user alone, and each against the cap best by the
 * pass's own scores and tie rule. Run plain and under AddressSanitizer + UBSan. The Python
 * side and every entry point: python/tests/test_rank.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rank_internal.h"

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
    /* The exact pass proves or repairs every list, so a kernel that scored the wrong user
     * would still pass the lines above: its users would have fallen back to the exact pass
     * over every item. */
    assert_int_equal(counts.full, 0);
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
    check(1000, 24, 70, 10, 0); /* three groups of users, the last of 6 */
    check(400, 16, 3, 10, 0);   /* too few users for a block: each ranked alone */
    check(400, 20, 2, 10, 1);
}

static void test_scaled_lists_equal_brute_force(void **state)
{
    (void)state;
    check(600, 16, 9, 10, 1);
}

/* The float32 pass compiled for the baseline CPU (on x86-64 the CPU picks AVX2 + FMA when it
 * has them: without this, that build would go untested on every machine that has them). */
static void test_baseline_build_gives_the_same_lists(void **state)
{
    (void)state;
    rank_force_baseline(1);
    check(500, 8, 5, 10, 0);
    check(700, 32, 11, 25, 0);
    check(300, 13, 9, 5, 0);
    check(1000, 24, 70, 10, 0);
    check(600, 16, 9, 10, 1);
    rank_force_baseline(0);
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

static int by_index(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The root of a shortlist is its worst kept (rank.c's settle reads it as the threshold). */
static void assert_root_worst(const struct heap *h)
{
    for (int64_t r = 1; r < h->size; r++)
        assert_true(worse(h->key[0], h->idx[0], h->key[r], h->idx[r]));
}

struct cand {
    float key;
    int64_t idx;
};

static int cand_best_first(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    if (a->key != b->key)
        return a->key > b->key ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* The cap best of one user by the float32 pass's own rule (its scores, exact here: small
 * whole numbers; ties to the lower index), sorted by index; -> how many. */
static int64_t reference_shortlist(const struct rank_items *it, const float *u,
                                   const struct bans *b, int64_t cap, int64_t *out)
{
    struct cand *all = malloc(sizeof(*all) * (size_t)it->n);
    int64_t m = 0;
    for (int64_t j = 0; j < it->n; j++) {
        if (in_list(b->a, b->na, j) || in_list(b->b, b->nb, j))
            continue;
        double sum = 0;
        for (int i = 0; i < it->d; i++)
            sum += (double)u[i] * it->v32[j * it->d + i];
        float s = (float)sum;
        if (it->scale)
            s *= (float)it->scale[j];
        all[m++] = (struct cand){s, j};
    }
    qsort(all, (size_t)m, sizeof(*all), cand_best_first);
    int64_t kept = m < cap ? m : cap;
    for (int64_t r = 0; r < kept; r++)
        out[r] = all[r].idx;
    qsort(out, (size_t)kept, sizeof(int64_t), by_index);
    free(all);
    return kept;
}

/* What the float32 pass kept for users 0 .. g - 1, scored together and each alone, must be
 * the same, and the cap best by the pass's own scores and tie rule (reference_shortlist):
 * items and users of small whole numbers make every float32 sum exact in any order, so the
 * kernels (one user; blocks of four; the users left over) cannot differ by rounding, and the
 * many ties test the rule. This is the test that sees a kernel fault: rank_top's exact pass
 * would repair the lists of a user scored wrongly or of a heap with the tie rule reversed
 * (retry_user), and the brute-force tests would pass. */
static void same_shortlists(int64_t n_items, int d, int g, int scaled)
{
    enum { CAP = 17 };
    float *v = malloc(sizeof(float) * (size_t)(n_items * d));
    float *u = malloc(sizeof(float) * (size_t)(g * d));
    double *scale = scaled ? malloc(sizeof(double) * (size_t)n_items) : NULL;
    float *panels = malloc(sizeof(float) * 16 * (size_t)d);
    for (int64_t j = 0; j < n_items * d; j++)
        v[j] = (float)(int)(uniform() * 4.0);
    for (int64_t j = 0; j < (int64_t)g * d; j++)
        u[j] = (float)(int)(uniform() * 4.0);
    for (int64_t j = 0; scale && j < n_items; j++)
        scale[j] = 1.0 / (1.0 + (double)(j % 7));
    struct rank_items it = {v, NULL, scale, n_items, d, 1.0};
    int64_t ban[4] = {1, 2, 3, 50}, none[1] = {0};
    double gk[RANK_GROUP][CAP], k1[CAP];
    int64_t gi[RANK_GROUP][CAP], i1[CAP];
    struct heap heaps[RANK_GROUP];
    struct bans bans[RANK_GROUP];
    for (int k = 0; k < g; k++) {
        heaps[k] = (struct heap){gk[k], gi[k], 0, CAP};
        bans[k] = (struct bans){ban + k % 4, none, 4 - k % 4, 0};
    }
    rank_shortlist(&it, u, g, bans, heaps, panels);
    for (int k = 0; k < g; k++) {
        struct heap one = {k1, i1, 0, CAP};
        rank_shortlist(&it, u + (int64_t)k * d, 1, &bans[k], &one, NULL);
        assert_root_worst(&heaps[k]);
        assert_root_worst(&one);
        assert_int_equal(heaps[k].size, one.size);
        qsort(gi[k], (size_t)one.size, sizeof(int64_t), by_index);
        qsort(i1, (size_t)one.size, sizeof(int64_t), by_index);
        int64_t ref[CAP];
        assert_int_equal(reference_shortlist(&it, u + (int64_t)k * d, &bans[k], CAP, ref),
                         one.size);
        for (int64_t r = 0; r < one.size; r++) {
            assert_int_equal(gi[k][r], i1[r]);
            assert_int_equal(i1[r], ref[r]);
        }
    }
    free(v), free(u), free(scale), free(panels);
}

static void test_groups_keep_what_users_alone_keep(void **state)
{
    (void)state;
    static const int dims[] = {3, 8, 13, 24, 64}, groups[] = {2, 3, 4, 5, 7, 16, 31, 32};
    for (int base = 0; base < 2; base++) {
        rank_force_baseline(base);
        for (size_t a = 0; a < sizeof(dims) / sizeof(dims[0]); a++)
            for (size_t b = 0; b < sizeof(groups) / sizeof(groups[0]); b++) {
                same_shortlists(333, dims[a], groups[b], 0);
                same_shortlists(200, dims[a], groups[b], 1);
            }
    }
    rank_force_baseline(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lists_equal_brute_force),
        cmocka_unit_test(test_scaled_lists_equal_brute_force),
        cmocka_unit_test(test_baseline_build_gives_the_same_lists),
        cmocka_unit_test(test_near_ties_make_the_shortlist_grow),
        cmocka_unit_test(test_groups_keep_what_users_alone_keep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
