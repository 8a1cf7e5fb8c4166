/*
 * rank_fast.c: the float32 pass of c_src/rank.c (see its file comment): every item's dot
 * product with each user in float32, the best kept in bounded heaps.
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

INLINE void shortlist(const struct rank_items *it, const float *u32, int g,
                      const struct bans *bans, struct heap *heaps)
{
    const int d = it->d;
    float s[4];
    for (int64_t j = 0; j < it->n; j += 4) {
        int rows = it->n - j < 4 ? (int)(it->n - j) : 4;
        const float *v = it->v32 + j * d;
        for (int k = 0; k < g; k++) {
            if (rows == 4)
                dot32x4(u32 + (int64_t)k * d, v, d, s);
            else
                for (int r = 0; r < rows; r++)
                    s[r] = dot32(u32 + (int64_t)k * d, v + (int64_t)r * d, d);
            if (it->scale)
                for (int r = 0; r < rows; r++)
                    s[r] *= (float)it->scale[j + r];
            struct heap *h = &heaps[k];
            /* the worst score kept, once the heap is full (a float: the keys are floats) */
            float worst = h->size == h->cap ? (float)h->key[0] : -INFINITY;
            if (rows == 4 && !(s[0] > worst || s[1] > worst || s[2] > worst || s[3] > worst))
                continue; /* the usual case once the heap is full: one test for four rows */
            for (int r = 0; r < rows; r++) {
                /* items come in index order: a tie with the worst kept loses */
                if (h->size == h->cap && !((double)s[r] > h->key[0]))
                    continue;
                if (!banned(&bans[k], j + r))
                    heap_offer(h, (double)s[r], j + r);
            }
        }
    }
}

/* The worst score kept once the heap is full, else -inf: what a new score must beat (a float:
 * the keys are floats). */
INLINE float threshold(const struct heap *h)
{
    return h->size == h->cap ? (float)h->key[0] : -INFINITY;
}

/* One user (recommend's case), the heap shortlist() would fill: the threshold stays in a
 * register and is read again only when the heap changed, and no per-user loop runs around
 * each block of rows (that bookkeeping cost as much as the products at 10k x 32). */
INLINE void shortlist_one(const struct rank_items *it, const float *u32,
                          const struct bans *bans, struct heap *h)
{
    const int d = it->d;
    float worst = threshold(h);
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
            if (s[r] > worst && !banned(bans, j + r)) {
                heap_offer(h, (double)s[r], j + r);
                worst = threshold(h);
            }
    }
    for (; j < it->n; j++) {
        float s = dot32(u32, it->v32 + j * d, d);
        if (it->scale)
            s *= (float)it->scale[j];
        if (s > worst && !banned(bans, j)) {
            heap_offer(h, (double)s, j);
            worst = threshold(h);
        }
    }
}

INLINE void shortlist_any(const struct rank_items *it, const float *u32, int g,
                          const struct bans *bans, struct heap *heaps)
{
    if (g == 1)
        shortlist_one(it, u32, bans, heaps);
    else
        shortlist(it, u32, g, bans, heaps);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__AVX2__)
__attribute__((target("avx2,fma"))) static void shortlist_avx2(
    const struct rank_items *it, const float *u32, int g, const struct bans *bans,
    struct heap *heaps)
{
    shortlist_any(it, u32, g, bans, heaps);
}

static void shortlist_base(const struct rank_items *it, const float *u32, int g,
                           const struct bans *bans, struct heap *heaps)
{
    shortlist_any(it, u32, g, bans, heaps);
}

void rank_shortlist(const struct rank_items *it, const float *u32, int g,
                    const struct bans *bans, struct heap *heaps)
{
    static int avx2 = -1; /* (a race here writes the same value) */
    if (avx2 < 0) {
        __builtin_cpu_init();
        avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    if (avx2)
        shortlist_avx2(it, u32, g, bans, heaps);
    else
        shortlist_base(it, u32, g, bans, heaps);
}
#else
void rank_shortlist(const struct rank_items *it, const float *u32, int g,
                    const struct bans *bans, struct heap *heaps)
{
    shortlist_any(it, u32, g, bans, heaps);
}
#endif
