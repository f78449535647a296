/* Int8 block kernels for CPU inference, built per CPU variant (see kernels/build.py).
 *
 * Weights are GGUF Q8_0 blocks, as llama.cpp stores them: per 32 weights a float16 scale d and
 * 32 int8 values q (34 bytes; weight = d * q), row after row. A Q8_0 file's matrices are used as
 * stored. Activations are quantized per row and per block of 32 into int8 values and float32
 * scales, so each block product is an exact int32 dot product times two scales.
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

/* sum over one block of x * w as 8 int32 partial sums: |x| * (w * sign(x)) */
static inline __m256i dot32(const uint8_t *w, const int8_t *x) {
    __m256i xv = _mm256_loadu_si256((const __m256i *)x);
    __m256i wv = _mm256_loadu_si256((const __m256i *)w);
    __m256i ax = _mm256_sign_epi8(xv, xv), sw = _mm256_sign_epi8(wv, xv);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sw);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), ax, sw);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), _mm256_set1_epi16(1));
#endif
}

#define STEP(acc, j)                                                                     \
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32(wr + (j) * BLOCK_BYTES + 2, xr + (j) * QK)), \
                          _mm256_set1_ps(f16_load(wr + (j) * BLOCK_BYTES) * xsr[j]), acc)

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
/* Several activation rows against each weight block (batched decoding): with the activations
 * offset to unsigned (x + 128, stored as x ^ 0x80), one dpbusd per row and block gives
 * sum (x + 128) * w; starting its accumulator at -128 * sum w, computed once per block for
 * all rows, leaves sum x * w. The int32 lanes, the scales and the order of the float sums are
 * those of the one-row kernel below, so a sequence decodes to the same bits alone or in a
 * batch. Rows go four at a time; a weight row stays in L1 across the groups. */
static void gemv_rows(const uint8_t *xu, const float *xs, const uint8_t *w, float *out, long B,
                      long N, long K, int nthreads) {
    long nb = K / QK;
    const __m256i offset = _mm256_set1_epi8((char)0x80);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (long n = 0; n < N; n++) {
        const uint8_t *wr = w + n * nb * BLOCK_BYTES;
        for (long b0 = 0; b0 < B; b0 += 4) {
            long rows = B - b0 < 4 ? B - b0 : 4;
            __m256 acc[4][4];
            for (int t = 0; t < 4; t++)
                for (int a = 0; a < 4; a++) acc[t][a] = _mm256_setzero_ps();
            for (long j = 0; j < nb; j++) {
                const uint8_t *blk = wr + j * BLOCK_BYTES;
                __m256i wv = _mm256_loadu_si256((const __m256i *)(blk + 2));
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

/* the sum of eight lanes in the order of hsum256 */
static inline float hsum8(const float v[8]) {
    float s0 = v[0] + v[4], s1 = v[1] + v[5], s2 = v[2] + v[6], s3 = v[3] + v[7];
    return (s0 + s2) + (s1 + s3);
}

/* one activation row against one weight row: the four accumulators of the vector loop */
static float row_dot(const uint8_t *wr, const int8_t *xr, const float *xsr, long nb) {
    float acc[4][8] = {{0}};
    int32_t lanes[8];
    for (long j = 0; j < nb; j++) {
        int a = j < nb - nb % 4 ? (int)(j & 3) : 0;
        dot32_lanes(wr + j * BLOCK_BYTES + 2, xr + j * QK, lanes);
        float scale = f16_load(wr + j * BLOCK_BYTES) * xsr[j];
        for (int l = 0; l < 8; l++) acc[a][l] = fmaf((float)lanes[l], scale, acc[a][l]);
    }
    float t[8];
    for (int l = 0; l < 8; l++) t[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    return hsum8(t);
}
#endif /* __AVX2__ */

/* out[b, n] = sum_k x[b, k] * w[n, k] for B activation rows (B small: decoding). Each weight
 * row is read once, front to back (scales inline: one stream for the prefetcher), into four
 * accumulators (independent chains hide the FMA latency). */
void q8_0_gemv(const int8_t *xq, const float *xs, const uint8_t *w, float *out, long B, long N,
               long K, int nthreads) {
    long nb = K / QK;
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    if (B > 1) {
        uint8_t stack[4096], *xu = B * K <= 4096 ? stack : malloc(B * K);
        if (xu) {
            for (long i = 0; i < B * K; i++) xu[i] = (uint8_t)xq[i] ^ 0x80u;
            gemv_rows(xu, xs, w, out, B, N, K, nthreads);
            if (xu != stack) free(xu);
            return;
        }
    }
#endif
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (long n = 0; n < N; n++) {
        const uint8_t *wr = w + n * nb * BLOCK_BYTES;
        for (long b = 0; b < B; b++) {
            const int8_t *xr = xq + b * K;
            const float *xsr = xs + b * nb;
#ifdef __AVX2__
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            long j = 0;
            for (; j + 4 <= nb; j += 4) {
                STEP(a0, j);
                STEP(a1, j + 1);
                STEP(a2, j + 2);
                STEP(a3, j + 3);
            }
            for (; j < nb; j++) STEP(a0, j);
            out[b * N + n] = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#else
            out[b * N + n] = row_dot(wr, xr, xsr, nb);
#endif
        }
    }
}

/* x: float [B, K] -> out: float [B, N]; activations quantized into caller-provided scratch
 * (xq: int8 [B, K], xs: float [B, K/32]) in the same call: one foreign call per layer. */
void q8_0_linear(const float *x, int8_t *xq, float *xs, const uint8_t *w, float *out, long B,
                 long N, long K, int nthreads) {
    q8_quantize(x, xq, xs, B, K);
    q8_0_gemv(xq, xs, w, out, B, N, K, nthreads);
}
