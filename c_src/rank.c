/*
 * rank.c: top-n items of an embedding model for one or many users (see rank.h).
 *
 * Two passes. The fast one (rank_fast.c) scores every item in float32 (8 SIMD lanes; many
 * users at once against transposed blocks of items) and keeps a shortlist of K > n items in
 * a bounded heap. The exact one scores the shortlist again in doubles, summing the products
 * in dimension order: that is the score a list is ranked by, on every path, so recommend,
 * recommend_many and export give the same lists, and those are the lists an exact ranking
 * of every item gives.
 *
 * Why the shortlist is enough: a float32 dot product of d terms is within
 * d * eps32 * sum|u_i v_i| of the true value (any summation order, FMA or not), and rounding u
 * to float32 adds eps32 * sum|u_i v_i|; sum|u_i v_i| <= ||u|| ||v_j||. With B that bound
 * (times two, for the scale and slack), an item left out scored at most t (the shortlist's
 * worst fast score), so its exact score is at most t + B. When the n-th best exact score of
 * the shortlist is above t + B, no item left out can reach the list or tie with it. When it is
 * not (near-ties, many equal vectors), the shortlist grows fourfold and the test is made
 * again; after that, every item is scored exactly. Values below float32's normal range lose
 * absolute, not relative, precision: B has an absolute term for them. Values that could
 * overflow float32 never come here (rank_py.c ranks those in numpy).
 *
 * Built with -ffp-contract=off: the exact pass must round each product and each sum as the
 * reference (and numpy) does. The float32 pass is rank_fast.c; what both use,
 * rank_internal.h.
 */
#include "rank_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRIES 2    /* shortlist growths before the exact pass over every item */

/* ---- the exact score ---------------------------------------------------------------------- */

double rank_exact(const struct rank_items *it, const double *u, int64_t item)
{
    double s = 0.0;
    if (it->v64) {
        const double *v = it->v64 + item * it->d;
        for (int i = 0; i < it->d; i++)
            s += u[i] * v[i];
    } else {
        const float *v = it->v32 + item * it->d;
        for (int i = 0; i < it->d; i++)
            s += u[i] * (double)v[i];
    }
    return it->scale ? s * it->scale[item] : s;
}

/* ---- the passes -------------------------------------------------------------------------- */

/* Every item scored exactly: the fallback, and the reference the tests compare with. */
static void exact_all(const struct rank_items *it, const double *u, const struct bans *bans,
                      struct heap *h)
{
    struct ban_cursor at = {0, 0};
    for (int64_t j = 0; j < it->n; j++) {
        double s = rank_exact(it, u, j);
        if (h->size == h->cap && !(s > h->key[0]))
            continue;
        if (!banned(bans, &at, j))
            heap_offer(h, s, j);
    }
}

struct scored {
    double key;
    int64_t idx;
};

static int best_first(const void *pa, const void *pb)
{
    const struct scored *a = pa, *b = pb;
    if (a->key != b->key)
        return a->key > b->key ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* tmp best first. A shortlist of one user (n + n/8 + 4) is a few dozen: insertion sort, without
 * qsort's call a comparison, is several times faster there. */
static void sort_best_first(struct scored *tmp, int64_t m)
{
    if (m > 64) {
        qsort(tmp, (size_t)m, sizeof(*tmp), best_first);
        return;
    }
    for (int64_t i = 1; i < m; i++) {
        struct scored x = tmp[i];
        int64_t at = i;
        for (; at > 0 && best_first(&x, &tmp[at - 1]) < 0; at--)
            tmp[at] = tmp[at - 1];
        tmp[at] = x;
    }
}

/* Rescores the shortlist exactly into tmp, best first; 1 when its first n are the exact
 * top n (see the file comment), 0 when the shortlist must grow. */
static int settle(const struct rank_items *it, const double *u, const struct heap *h,
                  int64_t n, double bound, struct scored *tmp)
{
    for (int64_t i = 0; i < h->size; i++) {
        tmp[i].idx = h->idx[i];
        tmp[i].key = rank_exact(it, u, h->idx[i]);
    }
    sort_best_first(tmp, h->size);
    if (h->size < h->cap || h->size <= n || h->cap >= it->n)
        return 1; /* every candidate is in the shortlist */
    double worst_fast = h->key[0];
    return tmp[n - 1].key > worst_fast + bound;
}

static double norm2(const double *u, int d)
{
    double s = 0.0;
    for (int i = 0; i < d; i++)
        s += u[i] * u[i];
    return sqrt(s);
}

/* Enough room past n that the bound rarely fails on real factors (a gap of 4e-6 relative at
 * d = 32 between the n-th and the last kept), and no more: a shortlist of K takes about
 * K (1 + ln(items / K)) heap offers in the float32 pass, each a few unpredictable branches,
 * and K products in the exact one. Going from 1.5n + 8 (23 at n = 10) to n + n/8 + 4 (15),
 * together with the ban cursors (rank_internal.h), made a user of 10k x 32 0.85x as costly
 * alone and 0.78x in a group of 32 (medians of 11 alternations, bench/rank_groups.c's data);
 * LibRecommender ALS factors (20k users, 10k items, 32 and 64 dims, N = 10 and 50) widened
 * no shortlist with either size. Near-ties the bound cannot settle widen it (retry_user). */
static int64_t shortlist_size(int64_t n, int64_t items)
{
    int64_t k = n + n / 8 + 4;
    return k < items ? k : items;
}

static void emit(const struct scored *tmp, int64_t have, int64_t n, int64_t *idx, double *score,
                 int64_t *count)
{
    int64_t m = have < n ? have : n;
    for (int64_t i = 0; i < m; i++) {
        idx[i] = tmp[i].idx;
        score[i] = tmp[i].key;
    }
    *count = m;
}

/* One user again, alone, with a bigger shortlist, then exactly. */
static int retry_user(const struct rank_items *it, const double *u, float *u32,
                      const struct bans *bans, int64_t n, double bound, int64_t *idx,
                      double *score, int64_t *count, struct rank_counts *counts)
{
    int64_t cap = shortlist_size(n, it->n);
    struct heap h = {0};
    struct scored *tmp = NULL;
    int rc = -1;
    counts->widened++;
    for (int t = 0; t <= TRIES; t++) {
        int full = t == TRIES;
        cap = full ? (n < it->n ? n : it->n) : (cap * 4 < it->n ? cap * 4 : it->n);
        free(h.key);
        free(h.idx);
        free(tmp);
        h = (struct heap){malloc(sizeof(double) * (size_t)(cap + 1)),
                          malloc(sizeof(int64_t) * (size_t)(cap + 1)), 0, cap};
        tmp = malloc(sizeof(*tmp) * (size_t)(cap + 1));
        if (!h.key || !h.idx || !tmp)
            goto out;
        if (full) {
            counts->full++;
            exact_all(it, u, bans, &h);
            for (int64_t i = 0; i < h.size; i++)
                tmp[i] = (struct scored){h.key[i], h.idx[i]};
            sort_best_first(tmp, h.size);
            emit(tmp, h.size, n, idx, score, count);
            break;
        }
        rank_shortlist(it, u32, 1, bans, &h, NULL);
        if (settle(it, u, &h, n, bound, tmp)) {
            emit(tmp, h.size, n, idx, score, count);
            break;
        }
    }
    rc = 0;
out:
    free(h.key);
    free(h.idx);
    free(tmp);
    return rc;
}

int rank_top(const struct rank_items *it, const double *u, int64_t users,
             const int64_t *ban_ptr, const int64_t *ban_idx,
             const int64_t *shared, int64_t n_shared, int64_t n,
             int64_t *out_idx, double *out_score, int64_t *out_count,
             struct rank_counts *counts)
{
    const int d = it->d;
    const int64_t cap = shortlist_size(n, it->n);
    /* 2 d eps32 for the dot product, eps32 for u in float32, the scale's rounding, slack */
    const double factor = (2.0 * d + 8.0) * ldexp(1.0, -24);
    /* sized for the largest group this call makes: recommend's one user allocates no panels */
    const size_t most = users < RANK_GROUP ? (users > 1 ? (size_t)users : 1) : RANK_GROUP;
    float *u32 = malloc(sizeof(float) * most * (size_t)(d ? d : 1));
    double *keys = malloc(sizeof(double) * most * (size_t)(cap + 1));
    int64_t *idxs = malloc(sizeof(int64_t) * most * (size_t)(cap + 1));
    struct scored *tmp = malloc(sizeof(*tmp) * (size_t)(cap + 1));
    float *panels = most >= RANK_PANEL_USERS
                        ? malloc(sizeof(float) * RANK_PANEL_ROWS * (size_t)(d ? d : 1))
                        : NULL;
    int rc = -1;
    if (!u32 || !keys || !idxs || !tmp || (most >= RANK_PANEL_USERS && !panels))
        goto out;
    memset(counts, 0, sizeof(*counts));
    for (int64_t start = 0; start < users; start += RANK_GROUP) {
        int g = users - start < RANK_GROUP ? (int)(users - start) : RANK_GROUP;
        struct heap heaps[RANK_GROUP];
        struct bans bans[RANK_GROUP];
        for (int k = 0; k < g; k++) {
            int64_t b = start + k;
            for (int i = 0; i < d; i++)
                u32[k * d + i] = (float)u[b * d + i];
            heaps[k] = (struct heap){keys + k * (cap + 1), idxs + k * (cap + 1), 0, cap};
            bans[k] = (struct bans){ban_idx + ban_ptr[b], shared, ban_ptr[b + 1] - ban_ptr[b],
                                    n_shared};
        }
        if (n > 0 && cap > 0)
            rank_shortlist(it, u32, g, bans, heaps, panels);
        for (int k = 0; k < g; k++) {
            int64_t b = start + k;
            const double *ub = u + b * d;
            /* plus what float32 loses below its normal range, absolutely: each product and
             * each u_i rounded to a subnormal is off by at most 2^-150 (times |v_ji|) */
            double bound = factor * norm2(ub, d) * it->bound_norm +
                           d * ldexp(1.0, -148) * (1.0 + it->bound_norm);
            if (n <= 0 || cap <= 0) {
                out_count[b] = 0;
            } else if (settle(it, ub, &heaps[k], n, bound, tmp)) {
                emit(tmp, heaps[k].size, n, out_idx + b * n, out_score + b * n, &out_count[b]);
            } else if (retry_user(it, ub, u32 + k * d, &bans[k], n, bound, out_idx + b * n,
                                  out_score + b * n, &out_count[b], counts) < 0) {
                goto out;
            }
        }
    }
    rc = 0;
out:
    free(u32);
    free(keys);
    free(idxs);
    free(tmp);
    free(panels);
    return rc;
}
