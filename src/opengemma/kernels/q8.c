/* Int8 block kernels for CPU inference, built per CPU variant (see kernels/build.py).
 *
 * Weights are GGUF Q8_0 blocks, as llama.cpp stores them: per 32 weights a float16 scale d and
 * 32 int8 values q (34 bytes; weight = d * q), row after row. A Q8_0 file's matrices are used as
 * stored. Activations are quantized per row and per block of 32 into int8 values and float32
 * scales, so each block product is an exact int32 dot product times two scales.
 *
 * Q5_0 (22 bytes: d, 32 high bits, 16 bytes of low nibbles; weight = d * (q - 16)) and Q4_0
 * (18 bytes: d, 16 bytes of nibbles; weight = d * (q - 8)) blocks are multiplied as stored by
 * the same code: their values are unpacked to int8 in registers, the very int8 values and
 * scale Q8_0 holds them as, so a product on Q5_0 / Q4_0 blocks has the bits of the product on
 * their exact Q8_0 widening while reading 35% / 47% fewer bytes.
 *
 * Also here: int8 values with separate float32 scales (q8_quantize / q8_dequantize), the
 * activation format and the frozen int8 base of QLoRA training.
 *
 * Every variant gives the same bits: the portable build (no AVX2) computes the same eight int32
 * lanes per block, the same fused multiply-adds into the same four accumulators and sums them in
 * the order of the vector code's horizontal sum.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "portable.h"

/* the variant this library was built as (checked by the loader against its manifest) */
#ifndef OG_VARIANT
#define OG_VARIANT "unnamed"
#endif
const char *og_kernel_variant(void) { return OG_VARIANT; }

#define QK 32
#define BLOCK_BYTES 34
enum { T_Q4_0 = 2, T_Q5_0 = 6, T_Q8_0 = 8 }; /* ggml type ids */

static inline long type_bytes(int t) { return t == T_Q4_0 ? 18 : t == T_Q5_0 ? 22 : 34; }

/* x: float [rows, K] -> xq: int8 [rows, K], xs: float [rows, K/32]; values in [-127, 127] */
void q8_quantize(const float *x, int8_t *xq, float *xs, long rows, long K) {
    long nb = K / QK;
    for (long r = 0; r < rows; r++) {
        for (long j = 0; j < nb; j++) {
            const float *v = x + r * K + j * QK;
            float amax = 0.0f;
            for (int i = 0; i < QK; i++) amax = fmaxf(amax, fabsf(v[i]));
            float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
            xs[r * nb + j] = d;
            for (int i = 0; i < QK; i++) xq[r * K + j * QK + i] = (int8_t)lrintf(v[i] * id);
        }
    }
}

/* w: int8 [N, K], ws: float [N, K/32] -> out: float [N, K] */
void q8_dequantize(const int8_t *w, const float *ws, float *out, long N, long K, int nthreads) {
    long nb = K / QK;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (long n = 0; n < N; n++)
        for (long j = 0; j < nb; j++) {
            float d = ws[n * nb + j];
            for (int i = 0; i < QK; i++) out[n * K + j * QK + i] = d * w[n * K + j * QK + i];
        }
}

static inline float f16_load(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return og_f16_to_f32(h);
}

/* rounding half away from zero, as llama.cpp's and the gguf package's Q8_0 quantizers */
static inline float round_away(float v) {
    float a = fabsf(v), f = floorf(a), r = f + floorf(2.0f * (a - f));
    return v < 0.0f ? -r : r;
}

/* x: float [rows, K] -> Q8_0 blocks, bit-identical to the gguf package's quantizer:
 * d = amax / 127, q = round(x * (1 / d)), d stored as float16 */
void q8_0_quantize(const float *x, uint8_t *out, long rows, long K) {
    long nb = K / QK;
    for (long r = 0; r < rows; r++)
        for (long j = 0; j < nb; j++) {
            const float *v = x + r * K + j * QK;
            uint8_t *blk = out + (r * nb + j) * BLOCK_BYTES;
            float amax = 0.0f;
            for (int i = 0; i < QK; i++) amax = fmaxf(amax, fabsf(v[i]));
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            uint16_t h = og_f32_to_f16(d);
            memcpy(blk, &h, 2);
            for (int i = 0; i < QK; i++) blk[2 + i] = (uint8_t)(int8_t)round_away(v[i] * id);
        }
}

/* Q8_0 blocks [N, K/32] -> bfloat16 bits [N, K], rounded to nearest even (the weights of a
 * bfloat16 matrix product for long inputs) */
void q8_0_dequantize_bf16(const uint8_t *w, uint16_t *out, long N, long K, int nthreads) {
    long nb = K / QK;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1 && N * K > (1L << 20))
    for (long n = 0; n < N; n++)
        for (long j = 0; j < nb; j++) {
            const uint8_t *blk = w + (n * nb + j) * BLOCK_BYTES;
            const int8_t *src = (const int8_t *)(blk + 2);
            uint16_t *dst = out + n * K + j * QK;
            float d = f16_load(blk);
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
            __m512 vd = _mm512_set1_ps(d);
            __m512 lo = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)src))), vd);
            __m512 hi = _mm512_mul_ps(
                _mm512_cvtepi32_ps(
                    _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(src + 16)))),
                vd);
            _mm512_storeu_si512((void *)dst, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
#else
            for (int i = 0; i < QK; i++) {
                float v = d * src[i];
                uint32_t bits;
                memcpy(&bits, &v, 4);
                if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu))
                    dst[i] = (uint16_t)((bits >> 16) | 0x40); /* keep NaN a NaN */
                else
                    dst[i] = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
            }
#endif
        }
}

/* rows of a Q8_0 embedding table, dequantized: out[i, :] = row ids[i] */
void q8_0_gather(const uint8_t *w, const int64_t *ids, float *out, long n_ids, long K) {
    long nb = K / QK;
    for (long i = 0; i < n_ids; i++)
        for (long j = 0; j < nb; j++) {
            const uint8_t *blk = w + (ids[i] * nb + j) * BLOCK_BYTES;
            const int8_t *q = (const int8_t *)(blk + 2);
            float d = f16_load(blk);
            for (int k = 0; k < QK; k++) out[i * K + j * QK + k] = d * q[k];
        }
}

#ifdef __AVX2__
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* byte i: 0xff where bit i of x is set, else 0 */
static inline __m256i bit_bytes(uint32_t x) {
    const __m256i pick = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0); /* byte i <- byte i / 8 */
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), pick);
    return _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
}

/* a Q5_0 block's fifth bits as 16 in bytes 0..31 */
static inline __m256i high_bits(const uint8_t *blk) {
    uint32_t qh;
    memcpy(&qh, blk + 2, 4);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    return _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(16));
#else
    return _mm256_and_si256(bit_bytes(qh), _mm256_set1_epi8(16));
#endif
}

/* the 32 int8 weights of a block of type t (as its exact Q8_0 widening holds them) */
static inline __m256i wvec(int t, const uint8_t *blk) {
    if (t == T_Q8_0) return _mm256_loadu_si256((const __m256i *)(blk + 2));
    const __m128i m4 = _mm_set1_epi8(15);
    __m128i q = _mm_loadu_si128((const __m128i *)(blk + (t == T_Q5_0 ? 6 : 2)));
    __m256i v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
    if (t == T_Q4_0) return _mm256_sub_epi8(v, _mm256_set1_epi8(8));
    return _mm256_sub_epi8(_mm256_or_si256(v, high_bits(blk)), _mm256_set1_epi8(16));
}

/* the unsigned values of a Q5_0 / Q4_0 block: 0..31 / 0..15, the weights plus 16 / 8 */
static inline __m256i wvec_u(int t, const uint8_t *blk) {
    const __m128i m4 = _mm_set1_epi8(15);
    __m128i q = _mm_loadu_si128((const __m128i *)(blk + (t == T_Q5_0 ? 6 : 2)));
    __m256i v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
    return t == T_Q4_0 ? v : _mm256_or_si256(v, high_bits(blk));
}

/* dot32's eight lanes for an offset block: sum of q * x over bytes 4l..4l+3, plus neg (minus
 * the offset times the sum of those x, once per activation row): the same integers */
static inline __m256i dot32u(__m256i q, const int8_t *x, __m256i neg) {
    __m256i xv = _mm256_loadu_si256((const __m256i *)x);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(neg, q, xv);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(neg, q, xv);
#else
    return _mm256_add_epi32(neg, _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv),
                                                   _mm256_set1_epi16(1)));
#endif
}

/* sum over one block of x * w as 8 int32 partial sums: |x| * (w * sign(x)) */
static inline __m256i dot32(__m256i wv, const int8_t *x) {
    __m256i xv = _mm256_loadu_si256((const __m256i *)x);
    __m256i ax = _mm256_sign_epi8(xv, xv), sw = _mm256_sign_epi8(wv, xv);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sw);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), ax, sw);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), _mm256_set1_epi16(1));
#endif
}

#define STEP(acc, j)                                                                      \
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32(wvec(t, wr + (j) * tb), xr + (j) * QK)), \
                          _mm256_set1_ps(f16_load(wr + (j) * tb) * xsr[j]), acc)
#define STEPU(acc, j)                                                                        \
    acc = _mm256_fmadd_ps(                                                                   \
        _mm256_cvtepi32_ps(dot32u(wvec_u(t, wr + (j) * tb), xr + (j) * QK,                   \
                                  _mm256_loadu_si256((const __m256i *)(negr + 8 * (j))))),   \
        _mm256_set1_ps(f16_load(wr + (j) * tb) * xsr[j]), acc)
#define ROW(step)                                                                            \
    do {                                                                                     \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                          \
        long j = 0;                                                                          \
        for (; j + 4 <= nb; j += 4) {                                                        \
            step(a0, j);                                                                     \
            step(a1, j + 1);                                                                 \
            step(a2, j + 2);                                                                 \
            step(a3, j + 3);                                                                 \
        }                                                                                    \
        for (; j < nb; j++) step(a0, j);                                                     \
        out[b * N + n] = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))); \
    } while (0)

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
/* Several activation rows against each weight block (batched decoding): with the activations
 * offset to unsigned (x + 128, stored as x ^ 0x80), one dpbusd per row and block gives
 * sum (x + 128) * w; starting its accumulator at -128 * sum w, computed once per block for
 * all rows, leaves sum x * w. The int32 lanes, the scales and the order of the float sums are
 * those of the one-row kernel below, so a sequence decodes to the same bits alone or in a
 * batch. Rows go four at a time; a weight row stays in L1 across the groups. */
static inline __attribute__((always_inline)) void gemv_rows(int t, const uint8_t *xu,
        const float *xs, const uint8_t *w, float *out, long B, long N, long K, int nthreads) {
    long nb = K / QK, tb = type_bytes(t);
    const __m256i offset = _mm256_set1_epi8((char)0x80);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (long n = 0; n < N; n++) {
        const uint8_t *wr = w + n * nb * tb;
        for (long b0 = 0; b0 < B; b0 += 4) {
            long rows = B - b0 < 4 ? B - b0 : 4;
            __m256 acc[4][4];
            for (int t = 0; t < 4; t++)
                for (int a = 0; a < 4; a++) acc[t][a] = _mm256_setzero_ps();
            for (long j = 0; j < nb; j++) {
                const uint8_t *blk = wr + j * tb;
                __m256i wv = wvec(t, blk);
                __m256i neg = _mm256_sub_epi32(                             /* -128 sum w */
                    _mm256_setzero_si256(), _mm256_dpbusd_epi32(_mm256_setzero_si256(), offset, wv));
                float wd = f16_load(blk);
                /* blocks 4i..4i+3 go to accumulators 0..3, the last nb % 4 blocks to 0 */
                int a = j < nb - nb % 4 ? (int)(j & 3) : 0;
                for (long t = 0; t < rows; t++) {
                    long b = b0 + t;
                    __m256i xv = _mm256_loadu_si256((const __m256i *)(xu + b * K + j * QK));
                    __m256i dot = _mm256_dpbusd_epi32(neg, xv, wv);
                    acc[t][a] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot),
                                                _mm256_set1_ps(wd * xs[b * nb + j]), acc[t][a]);
                }
            }
            for (long t = 0; t < rows; t++)
                out[(b0 + t) * N + n] = hsum256(_mm256_add_ps(
                    _mm256_add_ps(acc[t][0], acc[t][1]), _mm256_add_ps(acc[t][2], acc[t][3])));
        }
    }
}
#endif

#else /* portable: the vector code's arithmetic, lane by lane */

/* one block as the eight int32 lanes of dot32: lane l sums bytes 4l..4l+3 of |x| * (w signed
 * by x), the operands of the vector code's unsigned-by-signed byte products */
static inline void dot32_lanes(const uint8_t *w, const int8_t *x, int32_t lanes[8]) {
    for (int l = 0; l < 8; l++) {
        int32_t s = 0;
        for (int i = 4 * l; i < 4 * l + 4; i++) {
            int8_t wi = (int8_t)w[i];
            uint8_t ax = (uint8_t)(x[i] < 0 ? -x[i] : x[i]);
            int8_t sw = x[i] < 0 ? (int8_t)(uint8_t)(-(int)(uint8_t)wi) : x[i] ? wi : 0;
            s += (int32_t)ax * sw;
        }
        lanes[l] = s;
    }
}

/* the 32 int8 weights of a block of type t (as its exact Q8_0 widening holds them) */
static inline void wvals(int t, const uint8_t *blk, uint8_t out[QK]) {
    if (t == T_Q8_0) {
        memcpy(out, blk + 2, QK);
        return;
    }
    uint32_t qh = 0;
    if (t == T_Q5_0) memcpy(&qh, blk + 2, 4);
    const uint8_t *qs = blk + (t == T_Q5_0 ? 6 : 2);
    const int off = t == T_Q5_0 ? 16 : 8;
    for (int j = 0; j < 16; j++) {
        out[j] = (uint8_t)(int8_t)(((qs[j] & 15) | ((qh >> j) & 1) << 4) - off);
        out[j + 16] = (uint8_t)(int8_t)(((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - off);
    }
}

/* the sum of eight lanes in the order of hsum256 */
static inline float hsum8(const float v[8]) {
    float s0 = v[0] + v[4], s1 = v[1] + v[5], s2 = v[2] + v[6], s3 = v[3] + v[7];
    return (s0 + s2) + (s1 + s3);
}

/* one activation row against one weight row: the four accumulators of the vector loop */
static float row_dot(int t, const uint8_t *wr, const int8_t *xr, const float *xsr, long nb) {
    float acc[4][8] = {{0}};
    int32_t lanes[8];
    uint8_t wv[QK];
    long tb = type_bytes(t);
    for (long j = 0; j < nb; j++) {
        int a = j < nb - nb % 4 ? (int)(j & 3) : 0;
        wvals(t, wr + j * tb, wv);
        dot32_lanes(wv, xr + j * QK, lanes);
        float scale = f16_load(wr + j * tb) * xsr[j];
        for (int l = 0; l < 8; l++) acc[a][l] = fmaf((float)lanes[l], scale, acc[a][l]);
    }
    float sum[8];
    for (int l = 0; l < 8; l++) sum[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    return hsum8(sum);
}
#endif /* __AVX2__ */

/* out[b, n] = sum_k x[b, k] * w[n, k] for B activation rows (B small: decoding) and weights
 * in blocks of type t. Each weight row is read once, front to back (scales inline: one stream
 * for the prefetcher), into four accumulators (independent chains hide the FMA latency). */
static inline __attribute__((always_inline)) void gemv(int t, const int8_t *xq, const float *xs,
        const uint8_t *w, float *out, long B, long N, long K, int nthreads) {
    long nb = K / QK, tb = type_bytes(t);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    if (B > 1) {
        uint8_t stack[4096], *xu = B * K <= 4096 ? stack : malloc(B * K);
        if (xu) {
            for (long i = 0; i < B * K; i++) xu[i] = (uint8_t)xq[i] ^ 0x80u;
            gemv_rows(t, xu, xs, w, out, B, N, K, nthreads);
            if (xu != stack) free(xu);
            return;
        }
    }
#endif
#ifdef __AVX2__
    /* offset types: minus the offset times each 4 activations' sum, once for all weight rows */
    int32_t stack_neg[2048], *neg = NULL;
    if (t != T_Q8_0) {
        neg = B * nb * 8 <= 2048 ? stack_neg : malloc(B * nb * 8 * sizeof(int32_t));
        for (long i = 0; neg && i < B * nb * 8; i++)
            neg[i] = -(t == T_Q5_0 ? 16 : 8) *
                     (xq[4 * i] + xq[4 * i + 1] + xq[4 * i + 2] + xq[4 * i + 3]);
    }
#endif
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (long n = 0; n < N; n++) {
        const uint8_t *wr = w + n * nb * tb;
        for (long b = 0; b < B; b++) {
            const int8_t *xr = xq + b * K;
            const float *xsr = xs + b * nb;
#ifdef __AVX2__
            const int32_t *negr = neg ? neg + b * nb * 8 : NULL;
            if (negr)
                ROW(STEPU);
            else
                ROW(STEP);
#else
            out[b * N + n] = row_dot(t, wr, xr, xsr, nb);
#endif
        }
    }
#ifdef __AVX2__
    if (neg && neg != stack_neg) free(neg);
#endif
}

void q8_0_gemv(const int8_t *xq, const float *xs, const uint8_t *w, float *out, long B, long N,
               long K, int nthreads) {
    gemv(T_Q8_0, xq, xs, w, out, B, N, K, nthreads);
}

/* q8_0_gemv for weights in Q8_0, Q5_0 or Q4_0 blocks (`type`, the ggml id) as stored; returns
 * 0, or -1 for another type */
int qb_gemv(int type, const int8_t *xq, const float *xs, const uint8_t *w, float *out, long B,
            long N, long K, int nthreads) {
    switch (type) {
    case T_Q8_0: gemv(T_Q8_0, xq, xs, w, out, B, N, K, nthreads); return 0;
    case T_Q5_0: gemv(T_Q5_0, xq, xs, w, out, B, N, K, nthreads); return 0;
    case T_Q4_0: gemv(T_Q4_0, xq, xs, w, out, B, N, K, nthreads); return 0;
    default: return -1;
    }
}

/* qb_gemv with the activations x: float [B, K] quantized into caller-provided scratch */
int qb_linear(int type, const float *x, int8_t *xq, float *xs, const uint8_t *w, float *out,
              long B, long N, long K, int nthreads) {
    if (type != T_Q8_0 && type != T_Q5_0 && type != T_Q4_0) return -1;
    q8_quantize(x, xq, xs, B, K);
    return qb_gemv(type, xq, xs, w, out, B, N, K, nthreads);
}

/* x: float [B, K] -> out: float [B, N]; activations quantized into caller-provided scratch
 * (xq: int8 [B, K], xs: float [B, K/32]) in the same call: one foreign call per layer. */
void q8_0_linear(const float *x, int8_t *xq, float *xs, const uint8_t *w, float *out, long B,
                 long N, long K, int nthreads) {
    q8_quantize(x, xq, xs, B, K);
    q8_0_gemv(xq, xs, w, out, B, N, K, nthreads);
}
