/* Matrix x few-vectors products on GGUF K-quant blocks exactly as a file stores them.
 *
 * Weights: Q4_K (144 bytes per 256 weights: float16 d and dmin, twelve bytes of eight 6-bit
 * scales and eight 6-bit mins, 128 bytes of 4-bit values; weight = d * sc * q - dmin * m per
 * sub-block of 32) and Q6_K (210 bytes per 256: 128 bytes of low nibbles, 64 of high bit pairs,
 * sixteen int8 scales, float16 d; weight = d * sc * (q - 32) per run of 16), row after row.
 * Q5_K (176 bytes) is Q4_K with a fifth bit per weight (32 bytes of bit planes before the
 * nibbles), computed by the same code.
 *
 * Activations are quantized per super-block of 256 values (as llama.cpp's Q8_K): one float
 * scale dx = amax / 127, int8 values, and the sum of every 16 of them (which carries the mins
 * of Q4_K and the offset 32 of Q6_K). Each super-block product is then an exact int32
 * combination of integer dot products,
 *     Q4_K:  dx * (d * sum_j sc_j * dot_j  -  dmin * sum_j m_j * xsum_j)
 *     Q6_K:  dx * d * sum_r sc_r * (dot_r - 32 * xsum_r)
 * and only the per-super-block combination and the running sum along the row are float, done
 * one super-block at a time in the same order on every variant: the AVX-512 (with VNNI's
 * dpwssd), AVX2 (AVX-VNNI's dpwssd where present) and portable builds give the same bits.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "portable.h"

#pragma GCC optimize("fp-contract=off")
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define QK_K 256
#define Q4K_BYTES 144
#define Q6K_BYTES 210
#define Q5K_BYTES 176
enum { Q4_K = 12, Q5_K = 13, Q6_K = 14 };

static inline float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return og_f16_to_f32(h);
}

/* x: float [rows, K] (K a multiple of 256) -> xq: int8 [rows, K], xd: float [rows, K/256],
 * bs: int16 [rows, K/16] (sums of 16 consecutive xq); round half to even, as q8_quantize */
void q8k_quantize(const float *x, int8_t *xq, float *xd, int16_t *bs, long rows, long K) {
    long ns = K / QK_K;
    for (long r = 0; r < rows; r++)
        for (long s = 0; s < ns; s++) {
            const float *v = x + r * K + s * QK_K;
            int8_t *q = xq + r * K + s * QK_K;
            float amax = 0.0f;
            for (int i = 0; i < QK_K; i++) amax = fmaxf(amax, fabsf(v[i]));
            float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
            xd[r * ns + s] = d;
            for (int i = 0; i < QK_K; i++) q[i] = (int8_t)lrintf(v[i] * id);
            for (int g = 0; g < 16; g++) {
                int sum = 0;
                for (int i = 0; i < 16; i++) sum += q[16 * g + i];
                bs[(r * ns + s) * 16 + g] = (int16_t)sum;
            }
        }
}

#if defined(__AVX512BW__)
static inline __m512i dot16x2(__m512i acc, __m512i p, __m512i s) { /* acc += pairs of p * s */
#if defined(__AVX512VNNI__)
    return _mm512_dpwssd_epi32(acc, p, s);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p, s));
#endif
}
#elif defined(__AVX2__)
static inline __m256i dot16x2(__m256i acc, __m256i p, __m256i s) {
#if defined(__AVXVNNI__)
    return _mm256_dpwssd_avx_epi32(acc, p, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, s));
#endif
}

static inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
#endif

#if defined(__AVX2__)
/* bit k of each byte of h, as 16 (Q5_K's fifth bit of sub-block k) */
static inline __m256i bit16(__m256i h, int k) {
    __m256i b = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(k)), _mm256_set1_epi8(1));
    return _mm256_slli_epi16(b, 4);
}
#endif

/* sum_j sc_j * (4-bit values of sub-block j . x over its 32 values): exact int32; with qh
 * (Q5_K) each value has bit j of qh[l] as its fifth bit */
static inline int32_t q4k_dot(const uint8_t *qs, const uint8_t *qh, const int8_t *x,
                              const uint8_t sc[8]) {
#if defined(__AVX2__)
    const __m256i hv = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
#endif
#if defined(__AVX512BW__)
    const __m256i m4 = _mm256_set1_epi8(15);
    __m512i acc = _mm512_setzero_si512();
    for (int i = 0; i < 4; i++) { /* values 64i .. 64i + 63: low nibbles, then high ones */
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * i));
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (qh) {
            lo = _mm256_or_si256(lo, bit16(hv, 2 * i));
            hi = _mm256_or_si256(hi, bit16(hv, 2 * i + 1));
        }
        __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        __m512i p = _mm512_maddubs_epi16(w, _mm512_loadu_si512((const void *)(x + 64 * i)));
        __m512i s = _mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16(sc[2 * i]),
                                            _mm512_set1_epi16(sc[2 * i + 1]));
        acc = dot16x2(acc, p, s);
    }
    return _mm512_reduce_add_epi32(acc);
#elif defined(__AVX2__)
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < 4; i++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * i));
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (qh) {
            lo = _mm256_or_si256(lo, bit16(hv, 2 * i));
            hi = _mm256_or_si256(hi, bit16(hv, 2 * i + 1));
        }
        __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x + 64 * i)));
        __m256i phi =
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 64 * i + 32)));
        acc = dot16x2(acc, plo, _mm256_set1_epi16(sc[2 * i]));
        acc = dot16x2(acc, phi, _mm256_set1_epi16(sc[2 * i + 1]));
    }
    return hsum_i32(acc);
#else
    int32_t sum = 0;
    for (int i = 0; i < 4; i++) {
        int32_t lo = 0, hi = 0;
        for (int l = 0; l < 32; l++) {
            int h0 = qh ? ((qh[l] >> (2 * i)) & 1) << 4 : 0;
            int h1 = qh ? ((qh[l] >> (2 * i + 1)) & 1) << 4 : 0;
            lo += ((qs[32 * i + l] & 15) | h0) * x[64 * i + l];
            hi += ((qs[32 * i + l] >> 4) | h1) * x[64 * i + 32 + l];
        }
        sum += sc[2 * i] * lo + sc[2 * i + 1] * hi;
    }
    return sum;
#endif
}

#if defined(__AVX512BW__)
/* int16 lane i -> scale 4k + i / 8 (a madd lane covers 2 values, a scale run 16) */
static const uint16_t RUN_IDX[4][32] = {
#define R8(v) v, v, v, v, v, v, v, v
    {R8(0), R8(1), R8(2), R8(3)}, {R8(4), R8(5), R8(6), R8(7)},
    {R8(8), R8(9), R8(10), R8(11)}, {R8(12), R8(13), R8(14), R8(15)},
#undef R8
};
#endif

/* sum_r sc_r * (6-bit values of run r . x over its 16 values): exact int32 (without the -32) */
static inline int32_t q6k_dot(const uint8_t *blk, const int8_t *x, const int8_t *sc) {
    const uint8_t *ql = blk, *qh = blk + 128;
#if defined(__AVX512BW__)
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    const __m512i s16 = _mm512_castsi256_si512(
        _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc)));
    __m512i acc = _mm512_setzero_si512();
    for (int h = 0; h < 2; h++) { /* values 128h .. 128h + 127 */
        __m512i l = _mm512_loadu_si512((const void *)(ql + 64 * h));
        __m256i hb = _mm256_loadu_si256((const __m256i *)(qh + 32 * h));
        __m512i h01 = _mm512_inserti64x4(_mm512_castsi256_si512(hb), _mm256_srli_epi16(hb, 2), 1);
        __m512i h23 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_srli_epi16(hb, 4)),
                                         _mm256_srli_epi16(hb, 6), 1);
        __m512i w0 = _mm512_or_si512(_mm512_and_si512(l, m4),
                                     _mm512_slli_epi16(_mm512_and_si512(h01, m3), 4));
        __m512i w1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                     _mm512_slli_epi16(_mm512_and_si512(h23, m3), 4));
        __m512i p0 = _mm512_maddubs_epi16(w0, _mm512_loadu_si512((const void *)(x + 128 * h)));
        __m512i p1 =
            _mm512_maddubs_epi16(w1, _mm512_loadu_si512((const void *)(x + 128 * h + 64)));
        __m512i i0 = _mm512_loadu_si512((const void *)RUN_IDX[2 * h]);
        __m512i i1 = _mm512_loadu_si512((const void *)RUN_IDX[2 * h + 1]);
        acc = dot16x2(acc, p0, _mm512_permutexvar_epi16(i0, s16));
        acc = dot16x2(acc, p1, _mm512_permutexvar_epi16(i1, s16));
    }
    return _mm512_reduce_add_epi32(acc);
#elif defined(__AVX2__)
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    __m256i acc = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        __m256i hb = _mm256_loadu_si256((const __m256i *)(qh + 32 * h));
        for (int g = 0; g < 4; g++) { /* values 128h + 32g .. + 31: runs 8h + 2g, 8h + 2g + 1 */
            __m256i l = _mm256_loadu_si256((const __m256i *)(ql + 64 * h + 32 * (g % 2)));
            if (g >= 2) l = _mm256_srli_epi16(l, 4);
            __m256i hi = _mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * g)), m3);
            __m256i w = _mm256_or_si256(_mm256_and_si256(l, m4), _mm256_slli_epi16(hi, 4));
            __m256i p = _mm256_maddubs_epi16(
                w, _mm256_loadu_si256((const __m256i *)(x + 128 * h + 32 * g)));
            int r = 8 * h + 2 * g;
            acc = dot16x2(acc, p, _mm256_set_m128i(_mm_set1_epi16(sc[r + 1]), _mm_set1_epi16(sc[r])));
        }
    }
    return hsum_i32(acc);
#else
    int32_t sum = 0;
    for (int r = 0; r < 16; r++) {
        const int h = r / 8, g = (r / 2) % 4, l0 = 16 * (r % 2);
        const uint8_t *l = ql + 64 * h + 32 * (g % 2) + l0, *hb = qh + 32 * h + l0;
        const int8_t *xr = x + 128 * h + 32 * g + l0;
        int32_t dot = 0;
        for (int i = 0; i < 16; i++)
            dot += (((l[i] >> (4 * (g / 2))) & 15) | ((hb[i] >> (2 * g)) & 3) << 4) * xr[i];
        sum += sc[r] * dot;
    }
    return sum;
#endif
}

/* one weight row against one activation row: super-block by super-block, in order (Q4_K, or
 * Q5_K when five) */
static inline __attribute__((always_inline)) float q4k_row(int five, const uint8_t *w,
        const int8_t *x, const float *xd, const int16_t *bs, long ns) {
    float acc = 0.0f;
    for (long s = 0; s < ns; s++) {
        const uint8_t *blk = w + s * (five ? Q5K_BYTES : Q4K_BYTES);
        uint8_t sc[8], mn[8];
        og_scale_min_k4(blk + 4, sc, mn);
        const uint8_t *qs = blk + (five ? 48 : 16), *qh = five ? blk + 16 : NULL;
        int32_t a = q4k_dot(qs, qh, x + s * QK_K, sc), m = 0;
        for (int j = 0; j < 8; j++) m += mn[j] * (bs[16 * s + 2 * j] + bs[16 * s + 2 * j + 1]);
        float dd = f16_at(blk) * xd[s], dm = f16_at(blk + 2) * xd[s];
        float ta = dd * (float)a, tm = dm * (float)m;
        acc = acc + (ta - tm);
    }
    return acc;
}

static float q6k_row(const uint8_t *w, const int8_t *x, const float *xd, const int16_t *bs,
                     long ns) {
    float acc = 0.0f;
    for (long s = 0; s < ns; s++) {
        const uint8_t *blk = w + s * Q6K_BYTES;
        const int8_t *sc = (const int8_t *)(blk + 192);
        int32_t a = q6k_dot(blk, x + s * QK_K, sc), off = 0;
        for (int r = 0; r < 16; r++) off += sc[r] * bs[16 * s + r];
        float dd = f16_at(blk + 208) * xd[s];
        float t = dd * (float)(a - 32 * off);
        acc = acc + t;
    }
    return acc;
}

/* out[b, n] = sum_k x[b, k] w[n, k] for B activation rows quantized by q8k_quantize and N
 * weight rows of `type` (Q4_K, Q5_K or Q6_K). Returns 0, or -1 for another type or a width that is
 * not a multiple of 256. Each output is computed alone: the same bits for any B or threads. */
int kq_gemv(int type, const int8_t *xq, const float *xd, const int16_t *bs, const uint8_t *w,
            float *out, long B, long N, long K, int nthreads) {
    if (K % QK_K || (type != Q4_K && type != Q5_K && type != Q6_K)) return -1;
    long ns = K / QK_K;
    long row_bytes = ns * (type == Q4_K ? Q4K_BYTES : type == Q5_K ? Q5K_BYTES : Q6K_BYTES);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (long n = 0; n < N; n++) {
        const uint8_t *wr = w + n * row_bytes;
        for (long b = 0; b < B; b++) {
            const int8_t *xr = xq + b * K;
            const float *xdr = xd + b * ns;
            const int16_t *bsr = bs + b * ns * 16;
            out[b * N + n] = type == Q4_K   ? q4k_row(0, wr, xr, xdr, bsr, ns)
                             : type == Q5_K ? q4k_row(1, wr, xr, xdr, bsr, ns)
                                            : q6k_row(wr, xr, xdr, bsr, ns);
        }
    }
    return 0;
}

/* x: float [B, K] -> out: float [B, N], the activations quantized into caller-provided
 * scratch (xq: int8 [B, K], xd: float [B, K/256], bs: int16 [B, K/16]) in the same call */
int kq_linear(int type, const float *x, int8_t *xq, float *xd, int16_t *bs, const uint8_t *w,
              float *out, long B, long N, long K, int nthreads) {
    if (K % QK_K || (type != Q4_K && type != Q5_K && type != Q6_K)) return -1;
    q8k_quantize(x, xq, xd, bs, B, K);
    return kq_gemv(type, xq, xd, bs, w, out, B, N, K, nthreads);
}
