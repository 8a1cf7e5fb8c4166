/*
 * rank_fast.c: the float32 pass of c_src/rank.c (see its file comment): every item's dot
 * product with each user in float32, the best kept in bounded heaps.
 *
 * Two kernels. One user (recommend) reads the item rows as they are: four rows at a time,
 * their sums reduced together; groups of two or three users are ranked so, one by one. Four
 * users or more (recommend_many, export: up to RANK_GROUP at once) first transpose 16 rows
 * into two panels of 8 lanes, then score four users against them with a broadcast
 * multiply-add per dimension: no horizontal sums, eight independent chains, the item rows
 * read once for the whole group and the transposition paid once (a user of a group of 32
 * costs 0.50x-0.57x a lone one at 10k items, 0.09x-0.12x at 100k; bench/README.md, "Kernel").
 *
 * Its own file because it is compiled with floating-point contraction allowed (a multiply
 * and an add may become one FMA: the error bound holds either way), which the exact pass
 * must not have. On x86-64 it is compiled twice, for AVX2 with FMA and for the baseline
 * (SSE2), and the CPU picks at the first call: the binary needs no -march.
 */
#include "rank_internal.h"

#include <math.h>
#include <string.h>

#define LANES 8    /* float32 accumulators per dot product */
#define INLINE static inline __attribute__((always_inline))

/* 8 float32 lanes: one AVX register, two SSE ones on the baseline (GCC and Clang lower
 * vector types to what the target has). aligned(4): rows need not start on 32 bytes. The
 * functions passing them are static and inlined: GCC's note that such a return would change
 * the ABI across CPUs does not apply. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float lanes __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));

INLINE lanes load(const float *p)
{
    lanes v;
    memcpy(&v, p, sizeof(v));
    return v;
}

INLINE float lanes_sum(lanes a)
{
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

INLINE float dot32(const float *a, const float *b, int d)
{
    lanes acc = {0};
    int i = 0;
    for (; i + LANES <= d; i += LANES)
        acc += load(a + i) * load(b + i);
    float s = lanes_sum(acc);
    for (; i < d; i++)
        s += a[i] * b[i];
    return s;
}

#if defined(__clang__) || __GNUC__ >= 12
/* The lane sums of four rows at once, as a transposed reduction: a dozen shuffles and adds
 * instead of four separate horizontal sums (which cost as much as the products at d = 32). */
typedef float quad __attribute__((vector_size(4 * sizeof(float))));

INLINE quad halves(lanes a)
{
    return __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
}

INLINE void sums4(lanes s0, lanes s1, lanes s2, lanes s3, float *out)
{
    quad a0 = halves(s0), a1 = halves(s1), a2 = halves(s2), a3 = halves(s3);
    quad u01 = __builtin_shufflevector(a0, a1, 0, 4, 1, 5) +
               __builtin_shufflevector(a0, a1, 2, 6, 3, 7);
    quad u23 = __builtin_shufflevector(a2, a3, 0, 4, 1, 5) +
               __builtin_shufflevector(a2, a3, 2, 6, 3, 7);
    quad r = __builtin_shufflevector(u01, u23, 0, 1, 4, 5) +
             __builtin_shufflevector(u01, u23, 2, 3, 6, 7);
    memcpy(out, &r, sizeof(r));
}
#else
INLINE void sums4(lanes s0, lanes s1, lanes s2, lanes s3, float *out)
{
    out[0] = lanes_sum(s0);
    out[1] = lanes_sum(s1);
    out[2] = lanes_sum(s2);
    out[3] = lanes_sum(s3);
}
#endif

/* Four rows at once: four independent chains of additions keep the adders busy (one chain
 * waits on each addition's latency). (The sums' order differs from dot32's: the error bound
 * holds for any order, and the exact pass decides the lists.) */
INLINE void dot32x4(const float *a, const float *b, int d, float *out)
{
    const float *b1 = b + d, *b2 = b1 + d, *b3 = b2 + d;
    lanes s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int i = 0;
    for (; i + LANES <= d; i += LANES) {
        lanes x = load(a + i);
        s0 += x * load(b + i);
        s1 += x * load(b1 + i);
        s2 += x * load(b2 + i);
        s3 += x * load(b3 + i);
    }
    sums4(s0, s1, s2, s3, out);
    for (; i < d; i++) {
        out[0] += a[i] * b[i];
        out[1] += a[i] * b1[i];
        out[2] += a[i] * b2[i];
        out[3] += a[i] * b3[i];
    }
}

/* The worst score kept once the heap is full, else -inf: what a new score must beat (a float:
 * the keys are floats). */
INLINE float threshold(const struct heap *h)
{
    return h->size == h->cap ? (float)h->key[0] : -INFINITY;
}

/* One user (recommend's case): the threshold stays in a
 * register and is read again only when the heap changed, and no per-user loop runs around
 * each block of rows (that bookkeeping cost as much as the products at 10k x 32). */
INLINE void shortlist_one(const struct rank_items *it, const float *u32,
                          const struct bans *bans, struct heap *h)
{
    const int d = it->d;
    float worst = threshold(h);
    struct ban_cursor at = {0, 0};
    int64_t j = 0;
    for (; j + 4 <= it->n; j += 4) {
        float s[4];
        dot32x4(u32, it->v32 + j * d, d, s);
        if (it->scale)
            for (int r = 0; r < 4; r++)
                s[r] *= (float)it->scale[j + r];
        if (!(s[0] > worst || s[1] > worst || s[2] > worst || s[3] > worst))
            continue;
        for (int r = 0; r < 4; r++) /* in index order: a tie with the worst kept loses */
            if (s[r] > worst && !banned(bans, &at, j + r)) {
                heap_offer(h, (double)s[r], j + r);
                worst = threshold(h);
            }
    }
    for (; j < it->n; j++) {
        float s = dot32(u32, it->v32 + j * d, d);
        if (it->scale)
            s *= (float)it->scale[j];
        if (s > worst && !banned(bans, &at, j)) {
            heap_offer(h, (double)s, j);
            worst = threshold(h);
        }
    }
}

/* ---- many users: item panels (recommend_many, export) ----------------------------------- */

#define PANEL LANES            /* items a panel holds: one lane each */
#define UBLOCK RANK_PANEL_USERS /* users scored together: 4 users x 2 panels = 8 sums */
_Static_assert(2 * PANEL == RANK_PANEL_ROWS, "a panel pair holds RANK_PANEL_ROWS rows");

/* Rows j .. j + rows - 1 (rows <= 2 * PANEL) transposed into two panels:
 * panel[p][i * PANEL + r] = v[j + p * PANEL + r][i], the lanes past the last row zero. Built
 * once for every user of the group, so that a user's scores of 8 items are d multiply-adds of
 * a broadcast u_i, with no horizontal sums (which cost as much as the products at d = 32). */
#if defined(__clang__) || __GNUC__ >= 12
/* out[i * 8 + r] = in[r * stride + i] for an 8 x 8 block: 24 shuffles instead of 64 scalar
 * moves. */
INLINE void transpose8(const float *in, int64_t stride, float *out)
{
    lanes r0 = load(in), r1 = load(in + stride), r2 = load(in + 2 * stride),
          r3 = load(in + 3 * stride), r4 = load(in + 4 * stride), r5 = load(in + 5 * stride),
          r6 = load(in + 6 * stride), r7 = load(in + 7 * stride);
    lanes t0 = __builtin_shufflevector(r0, r1, 0, 8, 1, 9, 4, 12, 5, 13);
    lanes t1 = __builtin_shufflevector(r0, r1, 2, 10, 3, 11, 6, 14, 7, 15);
    lanes t2 = __builtin_shufflevector(r2, r3, 0, 8, 1, 9, 4, 12, 5, 13);
    lanes t3 = __builtin_shufflevector(r2, r3, 2, 10, 3, 11, 6, 14, 7, 15);
    lanes t4 = __builtin_shufflevector(r4, r5, 0, 8, 1, 9, 4, 12, 5, 13);
    lanes t5 = __builtin_shufflevector(r4, r5, 2, 10, 3, 11, 6, 14, 7, 15);
    lanes t6 = __builtin_shufflevector(r6, r7, 0, 8, 1, 9, 4, 12, 5, 13);
    lanes t7 = __builtin_shufflevector(r6, r7, 2, 10, 3, 11, 6, 14, 7, 15);
    lanes q0 = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
    lanes q1 = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
    lanes q2 = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
    lanes q3 = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
    lanes q4 = __builtin_shufflevector(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
    lanes q5 = __builtin_shufflevector(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
    lanes q6 = __builtin_shufflevector(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
    lanes q7 = __builtin_shufflevector(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
    lanes o[8] = {
        __builtin_shufflevector(q0, q4, 0, 1, 2, 3, 8, 9, 10, 11),
        __builtin_shufflevector(q1, q5, 0, 1, 2, 3, 8, 9, 10, 11),
        __builtin_shufflevector(q2, q6, 0, 1, 2, 3, 8, 9, 10, 11),
        __builtin_shufflevector(q3, q7, 0, 1, 2, 3, 8, 9, 10, 11),
        __builtin_shufflevector(q0, q4, 4, 5, 6, 7, 12, 13, 14, 15),
        __builtin_shufflevector(q1, q5, 4, 5, 6, 7, 12, 13, 14, 15),
        __builtin_shufflevector(q2, q6, 4, 5, 6, 7, 12, 13, 14, 15),
        __builtin_shufflevector(q3, q7, 4, 5, 6, 7, 12, 13, 14, 15),
    };
    memcpy(out, o, sizeof(o));
}
#endif

INLINE void fill_panels(const struct rank_items *it, int64_t j, int rows, float *panels)
{
    const int d = it->d;
    const float *v = it->v32 + j * d;
    int i0 = 0;
#if defined(__clang__) || __GNUC__ >= 12
    if (rows == 2 * PANEL)
        for (; i0 + LANES <= d; i0 += LANES)
            for (int p = 0; p < 2; p++)
                transpose8(v + (int64_t)p * PANEL * d + i0, d,
                           panels + (size_t)p * d * PANEL + (size_t)i0 * PANEL);
#endif
    for (int r = 0; r < 2 * PANEL; r++) {
        float *p = panels + (r / PANEL) * (size_t)d * PANEL + r % PANEL;
        for (int i = i0; i < d; i++)
            p[i * PANEL] = r < rows ? v[(int64_t)r * d + i] : 0.0f;
    }
}

/* The next block's rows (from j) asked for while this one is scored: the transposition reads
 * 16 rows a stride apart, which the hardware prefetcher did not foresee (without this, a
 * group of 32 took 1.07x to 1.8x the time per user, bench/rank_groups.c). */
INLINE void prefetch_rows(const struct rank_items *it, int64_t j)
{
    int64_t end = j + 2 * PANEL < it->n ? j + 2 * PANEL : it->n;
    if (j >= end)
        return;
    const char *v = (const char *)(it->v32 + j * it->d);
    const char *stop = (const char *)(it->v32 + end * it->d);
    for (; v < stop; v += 64) /* a cache line */
        __builtin_prefetch(v);
}

INLINE lanes splat(float x)
{
#if defined(__clang__) || __GNUC__ >= 12
    lanes v = {x};
    return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0); /* one vbroadcastss */
#else
    return (lanes){x, x, x, x, x, x, x, x};
#endif
}

/* A bit per lane of s above w. On x86-64 in SSE (the baseline, so that both builds of this
 * file may inline it): two compares and a movemask, not eight compares and branches. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <xmmintrin.h>
INLINE uint32_t above(lanes s, float w)
{
    __m128 lo, hi, t = _mm_set1_ps(w);
    memcpy(&lo, &s, sizeof(lo));
    memcpy(&hi, (const char *)&s + sizeof(lo), sizeof(hi));
    return (uint32_t)_mm_movemask_ps(_mm_cmpgt_ps(lo, t)) |
           (uint32_t)_mm_movemask_ps(_mm_cmpgt_ps(hi, t)) << 4;
}
#else
INLINE uint32_t above(lanes s, float w)
{
    uint32_t m = 0;
    for (int r = 0; r < PANEL; r++)
        m |= (uint32_t)(s[r] > w) << r;
    return m;
}
#endif

/* The items' scale factors (cosine models) as lanes, 0 past the last item. */
INLINE lanes scale_lanes(const struct rank_items *it, int64_t j)
{
    lanes f = {0};
    for (int r = 0; r < PANEL && j + r < it->n; r++)
        f[r] = (float)it->scale[j + r];
    return f;
}

/* Offers the items j .. j + rows - 1 (s0: the first 8, s1: the next) whose scores beat the
 * user's threshold, in index order. One test per user and 16 items, which almost always
 * fails once the heap is full. f: the 16 items' scale factors (cosine models); at: the user's
 * place in its ban lists. */
INLINE void offer16(const struct rank_items *it, struct heap *h, const struct bans *bans,
                    struct ban_cursor *at, float *worst, lanes s0, lanes s1, const lanes *f,
                    int64_t j, int rows)
{
    if (it->scale) {
        s0 *= f[0];
        s1 *= f[1];
    }
    uint32_t m = (above(s0, *worst) | above(s1, *worst) << PANEL) & ((1u << rows) - 1);
    if (!m)
        return;
    float v[2 * PANEL];
    memcpy(v, &s0, sizeof(s0));
    memcpy(v + PANEL, &s1, sizeof(s1));
    while (m) {
        int r = __builtin_ctz(m);
        m &= m - 1;
        /* in index order: a tie with the worst kept loses; the threshold may have risen */
        if (v[r] > *worst && !banned(bans, at, j + r)) {
            heap_offer(h, (double)v[r], j + r);
            *worst = threshold(h);
        }
    }
}

/* One user's scores of a panel pair (the users left over from blocks of four): four
 * dimensions per step into eight sums, as a block of four users has; with two sums the
 * multiply-adds waited on each other (2.3x to 2.7x the time of a lone user at 10k items). */
INLINE void score16_one(const float *a, const float *p0, const float *p1, int d, lanes *out0,
                        lanes *out1)
{
    lanes s0[4] = {{0}}, s1[4] = {{0}};
    int i = 0;
    for (; i + 4 <= d; i += 4)
        for (int q = 0; q < 4; q++) {
            lanes ub = splat(a[i + q]);
            s0[q] += ub * load(p0 + (i + q) * PANEL);
            s1[q] += ub * load(p1 + (i + q) * PANEL);
        }
    for (; i < d; i++) {
        lanes ub = splat(a[i]);
        s0[0] += ub * load(p0 + i * PANEL);
        s1[0] += ub * load(p1 + i * PANEL);
    }
    *out0 = (s0[0] + s0[1]) + (s0[2] + s0[3]);
    *out1 = (s1[0] + s1[1]) + (s1[2] + s1[3]);
}

/* g users (UBLOCK <= g <= RANK_GROUP), 16 items at a time; panels: 16 x d floats of scratch. */
INLINE void shortlist_many(const struct rank_items *it, const float *u32, int g,
                           const struct bans *bans, struct heap *heaps, float *panels)
{
    const int d = it->d;
    const float *p0 = panels, *p1 = panels + (size_t)d * PANEL;
    float worst[RANK_GROUP];
    struct ban_cursor at[RANK_GROUP];
    for (int k = 0; k < g; k++) {
        worst[k] = threshold(&heaps[k]);
        at[k] = (struct ban_cursor){0, 0};
    }
    for (int64_t j = 0; j < it->n; j += 2 * PANEL) {
        int rows = it->n - j < 2 * PANEL ? (int)(it->n - j) : 2 * PANEL;
        fill_panels(it, j, rows, panels);
        prefetch_rows(it, j + 2 * PANEL);
        lanes f[2] = {{0}, {0}}; /* once per block, not once per user */
        if (it->scale) {
            f[0] = scale_lanes(it, j);
            f[1] = scale_lanes(it, j + PANEL);
        }
        int k = 0;
        for (; k + UBLOCK <= g; k += UBLOCK) {
            const float *a0 = u32 + (int64_t)k * d, *a1 = a0 + d, *a2 = a1 + d, *a3 = a2 + d;
            lanes s00 = {0}, s01 = {0}, s10 = {0}, s11 = {0}, s20 = {0}, s21 = {0},
                  s30 = {0}, s31 = {0};
            for (int i = 0; i < d; i++) {
                lanes x0 = load(p0 + i * PANEL), x1 = load(p1 + i * PANEL);
                lanes b0 = splat(a0[i]), b1 = splat(a1[i]), b2 = splat(a2[i]), b3 = splat(a3[i]);
                s00 += b0 * x0;
                s01 += b0 * x1;
                s10 += b1 * x0;
                s11 += b1 * x1;
                s20 += b2 * x0;
                s21 += b2 * x1;
                s30 += b3 * x0;
                s31 += b3 * x1;
            }
            offer16(it, &heaps[k], &bans[k], &at[k], &worst[k], s00, s01, f, j, rows);
            offer16(it, &heaps[k + 1], &bans[k + 1], &at[k + 1], &worst[k + 1], s10, s11, f, j,
                    rows);
            offer16(it, &heaps[k + 2], &bans[k + 2], &at[k + 2], &worst[k + 2], s20, s21, f, j,
                    rows);
            offer16(it, &heaps[k + 3], &bans[k + 3], &at[k + 3], &worst[k + 3], s30, s31, f, j,
                    rows);
        }
        for (; k < g; k++) {
            lanes s0, s1;
            score16_one(u32 + (int64_t)k * d, p0, p1, d, &s0, &s1);
            offer16(it, &heaps[k], &bans[k], &at[k], &worst[k], s0, s1, f, j, rows);
        }
    }
}

INLINE void shortlist_any(const struct rank_items *it, const float *u32, int g,
                          const struct bans *bans, struct heap *heaps, float *panels)
{
    if (g < UBLOCK) /* two or three users: one block's transposition cost more than it saved */
        for (int k = 0; k < g; k++)
            shortlist_one(it, u32 + (int64_t)k * it->d, &bans[k], &heaps[k]);
    else
        shortlist_many(it, u32, g, bans, heaps, panels);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__AVX2__)
__attribute__((target("avx2,fma"))) static void shortlist_avx2(
    const struct rank_items *it, const float *u32, int g, const struct bans *bans,
    struct heap *heaps, float *panels)
{
    shortlist_any(it, u32, g, bans, heaps, panels);
}

static void shortlist_base(const struct rank_items *it, const float *u32, int g,
                           const struct bans *bans, struct heap *heaps, float *panels)
{
    shortlist_any(it, u32, g, bans, heaps, panels);
}

static int avx2 = -1; /* -1: not asked yet (a race here writes the same value) */

void rank_force_baseline(int yes)
{
    avx2 = yes ? 0 : -1;
}

void rank_shortlist(const struct rank_items *it, const float *u32, int g,
                    const struct bans *bans, struct heap *heaps, float *panels)
{
    if (avx2 < 0) {
        __builtin_cpu_init();
        avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    if (avx2)
        shortlist_avx2(it, u32, g, bans, heaps, panels);
    else
        shortlist_base(it, u32, g, bans, heaps, panels);
}
#else
void rank_force_baseline(int yes)
{
    (void)yes; /* one build only */
}

void rank_shortlist(const struct rank_items *it, const float *u32, int g,
                    const struct bans *bans, struct heap *heaps, float *panels)
{
    shortlist_any(it, u32, g, bans, heaps, panels);
}
#endif
