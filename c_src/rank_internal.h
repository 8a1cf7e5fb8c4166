/*
 * rank_internal.h: what the two passes of c_src/rank.c share: the bounded heap and the bans.
 * rank_fast.c (the float32 pass, its own file for its own floating-point flags) fills heaps;
 * rank.c does the rest.
 */
#ifndef URO_RANK_INTERNAL_H
#define URO_RANK_INTERNAL_H

#include "rank.h"

/* ---- a bounded heap of (score, index): the root is the worst kept ---------------------- */

struct heap {
    double *key;
    int64_t *idx;
    int64_t size, cap;
};

static inline int worse(double ka, int64_t ia, double kb, int64_t ib)
{
    return ka < kb || (ka == kb && ia > ib);
}

static inline void heap_swap(struct heap *h, int64_t a, int64_t b)
{
    double k = h->key[a];
    int64_t i = h->idx[a];
    h->key[a] = h->key[b];
    h->idx[a] = h->idx[b];
    h->key[b] = k;
    h->idx[b] = i;
}

static inline void sift_down(struct heap *h, int64_t at)
{
    for (;;) {
        int64_t l = 2 * at + 1, r = l + 1, w = at;
        if (l < h->size && worse(h->key[l], h->idx[l], h->key[w], h->idx[w]))
            w = l;
        if (r < h->size && worse(h->key[r], h->idx[r], h->key[w], h->idx[w]))
            w = r;
        if (w == at)
            return;
        heap_swap(h, at, w);
        at = w;
    }
}

/* Keeps (key, idx) if it is among the cap best seen. */
static inline void heap_offer(struct heap *h, double key, int64_t idx)
{
    if (h->size < h->cap) {
        int64_t at = h->size++;
        h->key[at] = key;
        h->idx[at] = idx;
        while (at > 0) {
            int64_t up = (at - 1) / 2;
            if (!worse(h->key[at], h->idx[at], h->key[up], h->idx[up]))
                break;
            heap_swap(h, at, up);
            at = up;
        }
    } else if (worse(h->key[0], h->idx[0], key, idx)) {
        h->key[0] = key;
        h->idx[0] = idx;
        sift_down(h, 0);
    }
}

/* ---- bans: two sorted lists -------------------------------------------------------------- */

struct bans {
    const int64_t *a, *b;
    int64_t na, nb;
};

/* Where a walk in index order stands in each list. Every pass asks about a user's candidates
 * in index order, so the answer is a cursor that only moves forward: one comparison when no
 * ban was passed, a binary search over the rest when one was (a user with thousands of
 * consumed items does not walk them one by one). Before, each of the hundred-odd candidates
 * of a user was searched for in both lists from the start, in branches no predictor learns:
 * the cursor made a user about 0.95x as costly at 10k x 32 (bench/rank_groups.c). */
struct ban_cursor {
    int64_t a, b;
};

/* The first position at or after at whose value is not below x. */
static inline int64_t skip_below(const int64_t *v, int64_t n, int64_t at, int64_t x)
{
    if (at >= n || v[at] >= x)
        return at;
    int64_t lo = at + 1, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (v[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Whether item j is banned; j must not be below the last item asked about with this cursor
 * (which starts at {0, 0}). */
static inline int banned(const struct bans *b, struct ban_cursor *c, int64_t j)
{
    c->a = skip_below(b->a, b->na, c->a, j);
    c->b = skip_below(b->b, b->nb, c->b, j);
    return (c->a < b->na && b->a[c->a] == j) || (c->b < b->nb && b->b[c->b] == j);
}

/* Users scored per read of the items (recommend_many, export): enough to pay for the
 * transposition of rank_fast.c's panels many times over, few enough that their vectors and
 * heaps stay in the first-level cache. */
#define RANK_GROUP 32

/* Groups of at least RANK_PANEL_USERS users are scored against panels: RANK_PANEL_ROWS item
 * rows transposed, RANK_PANEL_ROWS x d floats of scratch (rank_fast.c). */
#define RANK_PANEL_USERS 4
#define RANK_PANEL_ROWS 16

/* The float32 pass for g users at once (1 <= g <= RANK_GROUP): heaps[k] gets the cap best
 * scores of user k (rank_fast.c). panels: scratch of RANK_PANEL_ROWS x d floats, used for
 * groups of RANK_PANEL_USERS or more (may be NULL for fewer). */
void rank_shortlist(const struct rank_items *it, const float *u32, int g,
                    const struct bans *bans, struct heap *heaps, float *panels);

#endif
