/*
 * rank.h: the ranking kernel of embedding models (see rank.c). Plain C, no Python: the
 * binding is rank_py.c.
 */
#ifndef URO_RANK_H
#define URO_RANK_H

#include <stdint.h>

struct rank_items {
    const float *v32;    /* n x d, row-major: what the fast pass reads */
    const double *v64;   /* n x d, or NULL when v32 holds the exact values */
    const double *scale; /* n per-item factors (cosine: 1 / norm), or NULL */
    int64_t n;
    int d;
    double bound_norm;   /* max over items of ||v_j||_2 * |scale_j|: the error bound's */
};

struct rank_counts {
    int64_t widened; /* users whose shortlist had to grow */
    int64_t full;    /* users ranked by the exact pass over every item */
};

/*
 * The n best items of each of B users (u: B x d doubles), best first, by the exact score
 * ((sum of u_i * v_ji in dimension order, in doubles) * scale_j), ties to the lower index.
 * Items in the user's banned list (ban_idx[ban_ptr[b] .. ban_ptr[b+1]), sorted) or in the
 * shared one (sorted) are never returned. out_idx, out_score: B x n; out_count[b] is n, or
 * fewer when fewer items are left. Returns 0, or -1 when memory runs out.
 */
int rank_top(const struct rank_items *it, const double *u, int64_t users,
             const int64_t *ban_ptr, const int64_t *ban_idx,
             const int64_t *shared, int64_t n_shared, int64_t n,
             int64_t *out_idx, double *out_score, int64_t *out_count,
             struct rank_counts *counts);

/* The exact score of one item (what rank_top ranks by). */
double rank_exact(const struct rank_items *it, const double *u, int64_t item);

/* For the tests: yes != 0 makes the float32 pass use its baseline build (SSE2 on x86-64)
 * even where the CPU has AVX2 and FMA; 0 lets the CPU choose again. Not thread-safe. */
void rank_force_baseline(int yes);

#endif
