/* GGUF (ggml) block decoding, bit-identical to the `gguf` package's numpy reference.
 *
 * gguf_dequantize: stored rows -> float32.  gguf_to_q8_0: stored rows -> Q8_0 blocks, opengemma's
 * in-memory format for int8 layers (see q8.c).  The reference rounds every product and sum
 * separately (numpy), so fused multiply-adds are disabled below (after the headers, whose inline
 * intrinsics then take this file's setting where they are inlined).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "portable.h"

#pragma GCC optimize("fp-contract=off")

#define QK 32   /* values per int8 block of the output format */
#define QK_K 256
#define SEG 256 /* values decoded at once before re-quantizing (a multiple of every block size) */
/* Threads only for tensors of at least PAR_MIN values (smaller ones take well under a
 * millisecond, less than waking a thread that shares its core with another process), handing out
 * rows by the PAR_CHUNK values so that a thread that is not running does not hold the others up */
#define PAR_MIN (1L << 21)
#define PAR_CHUNK (1L << 16)

enum { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12,
       Q5_K = 13, Q6_K = 14, BF16 = 30 };

/* values per block and bytes per block; 0 = not supported here */
static void block_size(int type, long *bs, long *ts) {
    switch (type) {
    case F32: *bs = 1, *ts = 4; return;
    case F16: case BF16: *bs = 1, *ts = 2; return;
    case Q4_0: *bs = 32, *ts = 18; return;
    case Q4_1: *bs = 32, *ts = 20; return;
    case Q5_0: *bs = 32, *ts = 22; return;
    case Q5_1: *bs = 32, *ts = 24; return;
    case Q8_0: *bs = 32, *ts = 34; return;
    case Q4_K: *bs = 256, *ts = 144; return;
    case Q5_K: *bs = 256, *ts = 176; return;
    case Q6_K: *bs = 256, *ts = 210; return;
    default: *bs = 0, *ts = 0;
    }
}

static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

#define bits_f32 og_bits_f32
#define f16 og_f16_exact

static inline float f16p(const uint8_t *p) { return f16(le16(p)); }

/* ------------------------------------------------------------------ block decoders */
/* each decodes nb consecutive blocks at x into nb * block-size floats at y */

static void dq_f16(const uint8_t *x, long n, float *y) {
    long i = 0;
#ifdef __AVX512F__
    const __m512i sgn = _mm512_set1_epi32(0x8000), mag = _mm512_set1_epi32(0x7fff);
    const __m512i inf = _mm512_set1_epi32(0x7c00), man = _mm512_set1_epi32(0x3ff);
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(x + 2 * i));
        __m512 f = _mm512_cvtph_ps(h);
        __m512i w = _mm512_cvtepu16_epi32(h);
        /* the conversion quiets signalling NaNs; numpy keeps the payload as it is */
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(w, mag), inf);
        __m512i keep = _mm512_or_si512(
            _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(w, sgn), 16),
                            _mm512_set1_epi32(0x7f800000)),
            _mm512_slli_epi32(_mm512_and_si512(w, man), 13));
        _mm512_storeu_ps(y + i, _mm512_mask_mov_ps(f, nan, _mm512_castsi512_ps(keep)));
    }
#endif
    for (; i < n; i++) y[i] = f16p(x + 2 * i);
}

static void dq_bf16(const uint8_t *x, long n, float *y) {
    for (long i = 0; i < n; i++) y[i] = bits_f32((uint32_t)le16(x + 2 * i) << 16);
}

static void dq_q4_0(const uint8_t *x, long nb, float *y) {
    for (long b = 0; b < nb; b++, x += 18, y += 32) {
        const float d = f16p(x);
        const uint8_t *qs = x + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((qs[j] & 15) - 8);
            y[j + 16] = d * (float)((qs[j] >> 4) - 8);
        }
    }
}

static void dq_q4_1(const uint8_t *x, long nb, float *y) {
    for (long b = 0; b < nb; b++, x += 20, y += 32) {
        const float d = f16p(x), m = f16p(x + 2);
        const uint8_t *qs = x + 4;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)(qs[j] & 15) + m;
            y[j + 16] = d * (float)(qs[j] >> 4) + m;
        }
    }
}

static void dq_q5_0(const uint8_t *x, long nb, float *y) {
    for (long b = 0; b < nb; b++, x += 22, y += 32) {
        const float d = f16p(x);
        uint32_t qh;
        memcpy(&qh, x + 2, 4);
        const uint8_t *qs = x + 6;
        for (int j = 0; j < 16; j++) {
            int lo = (qs[j] & 15) | ((qh >> j) & 1) << 4;
            int hi = (qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
            y[j] = d * (float)(lo - 16);
            y[j + 16] = d * (float)(hi - 16);
        }
    }
}

static void dq_q5_1(const uint8_t *x, long nb, float *y) {
    for (long b = 0; b < nb; b++, x += 24, y += 32) {
        const float d = f16p(x), m = f16p(x + 2);
        uint32_t qh;
        memcpy(&qh, x + 4, 4);
        const uint8_t *qs = x + 8;
        for (int j = 0; j < 16; j++) {
            int lo = (qs[j] & 15) | ((qh >> j) & 1) << 4;
            int hi = (qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
            y[j] = d * (float)lo + m;
            y[j + 16] = d * (float)hi + m;
        }
    }
}

static void dq_q8_0(const uint8_t *x, long nb, float *y) {
    for (long b = 0; b < nb; b++, x += 34, y += 32) {
        const float d = f16p(x);
        const int8_t *qs = (const int8_t *)(x + 2);
        for (int j = 0; j < 32; j++) y[j] = (float)qs[j] * d;
    }
}

#define scale_min_k4 og_scale_min_k4 /* portable.h */

static void dq_q4_k(const uint8_t *x, long nb, float *y) {
    for (long b = 0; b < nb; b++, x += 144, y += QK_K) {
        const float d = f16p(x), dmin = f16p(x + 2);
        uint8_t sc[8], mn[8];
        scale_min_k4(x + 4, sc, mn);
        const uint8_t *qs = x + 16;
        for (int i = 0; i < 4; i++) {
            const float d1 = d * (float)sc[2 * i], m1 = dmin * (float)mn[2 * i];
            const float d2 = d * (float)sc[2 * i + 1], m2 = dmin * (float)mn[2 * i + 1];
            float *o = y + 64 * i;
            const uint8_t *q = qs + 32 * i;
            for (int l = 0; l < 32; l++) {
                o[l] = d1 * (float)(q[l] & 15) - m1;
                o[l + 32] = d2 * (float)(q[l] >> 4) - m2;
            }
        }
    }
}

static void dq_q5_k(const uint8_t *x, long nb, float *y) {
    for (long b = 0; b < nb; b++, x += 176, y += QK_K) {
        const float d = f16p(x), dmin = f16p(x + 2);
        uint8_t sc[8], mn[8];
        scale_min_k4(x + 4, sc, mn);
        const uint8_t *qh = x + 16, *qs = x + 48;
        for (int i = 0; i < 4; i++) {
            const int j1 = 2 * i, j2 = 2 * i + 1;
            const float d1 = d * (float)sc[j1], m1 = dmin * (float)mn[j1];
            const float d2 = d * (float)sc[j2], m2 = dmin * (float)mn[j2];
            float *o = y + 64 * i;
            const uint8_t *q = qs + 32 * i;
            for (int l = 0; l < 32; l++) {
                o[l] = d1 * (float)((q[l] & 15) | ((qh[l] >> j1) & 1) << 4) - m1;
                o[l + 32] = d2 * (float)((q[l] >> 4) | ((qh[l] >> j2) & 1) << 4) - m2;
            }
        }
    }
}

static void dq_q6_k(const uint8_t *x, long nb, float *y) {
    for (long b = 0; b < nb; b++, x += 210, y += QK_K) {
        const float d = f16p(x + 208);
        const int8_t *sc = (const int8_t *)(x + 192);
        /* 16 runs of 16 values, each with its own scale: run r = 8h + 2g + l/16 covers
         * y[128h + 32g + l], 6-bit value from nibble g/2 of ql[64h + 32(g%2) + l] and the bit
         * pair g of qh[32h + l] */
        for (int r = 0; r < 16; r++) {
            const int h = r / 8, g = (r / 2) % 4, l0 = 16 * (r % 2);
            const uint8_t *ql = x + 64 * h + 32 * (g % 2) + l0, *qh = x + 128 + 32 * h + l0;
            const int lshift = 4 * (g / 2), hshift = 2 * g;
            const float ds = d * (float)sc[r];
            float *o = y + 128 * h + 32 * g + l0;
            for (int l = 0; l < 16; l++)
                o[l] = ds * (float)((((ql[l] >> lshift) & 15) | ((qh[l] >> hshift) & 3) << 4) - 32);
        }
    }
}

/* values [k0, k0 + n) of one stored row (k0 and n multiples of the type's block size) */
static void decode(int type, const uint8_t *row, long k0, long n, float *y) {
    long bs, ts;
    block_size(type, &bs, &ts);
    const uint8_t *x = row + k0 / bs * ts;
    long nb = n / bs;
    switch (type) {
    case F32: memcpy(y, x, n * sizeof(float)); break;
    case F16: dq_f16(x, n, y); break;
    case BF16: dq_bf16(x, n, y); break;
    case Q4_0: dq_q4_0(x, nb, y); break;
    case Q4_1: dq_q4_1(x, nb, y); break;
    case Q5_0: dq_q5_0(x, nb, y); break;
    case Q5_1: dq_q5_1(x, nb, y); break;
    case Q8_0: dq_q8_0(x, nb, y); break;
    case Q4_K: dq_q4_k(x, nb, y); break;
    case Q5_K: dq_q5_k(x, nb, y); break;
    case Q6_K: dq_q6_k(x, nb, y); break;
    }
}

/* src: rows stored rows of K values of ggml `type` -> out: float [rows, K].
 * Returns 0, or -1 when the type is not decoded here (the caller falls back). */
int gguf_dequantize(int type, const uint8_t *src, long rows, long K, float *out, int nthreads) {
    long bs, ts;
    block_size(type, &bs, &ts);
    if (!bs || K % bs) return -1;
    const long row_bytes = K / bs * ts, chunk = K < PAR_CHUNK ? PAR_CHUNK / K : 1;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, chunk) \
    if (nthreads > 1 && rows * K >= PAR_MIN)
    for (long r = 0; r < rows; r++) decode(type, src + r * row_bytes, 0, K, out + r * K);
    return 0;
}

/* rows ids[i] of a table of K-value rows of ggml `type` -> out: float [n_ids, K] (embedding
 * lookups on blocks as stored). Returns 0, or -1 when the type is not decoded here. */
int gguf_gather(int type, const uint8_t *w, const int64_t *ids, float *out, long n_ids, long K) {
    long bs, ts;
    block_size(type, &bs, &ts);
    if (!bs || K % bs) return -1;
    for (long i = 0; i < n_ids; i++) decode(type, w + ids[i] * (K / bs * ts), 0, K, out + i * K);
    return 0;
}

/* ------------------------------------------------------------------ to Q8_0 blocks */

void q8_0_quantize(const float *x, uint8_t *out, long rows, long K); /* q8.c */

/* src: rows stored rows of K values (K a multiple of 32) -> Q8_0 blocks [rows, K/32], the
 * in-memory format of opengemma's int8 layers. Q8_0 is copied as stored; Q4_0 and Q5_0 hold
 * small integers times a float16 scale, which Q8_0 holds exactly (same scale, the integers as
 * int8); other types are decoded 256 values at a time and quantized as the gguf package's Q8_0
 * quantizer does. Returns 0, or -1 for a type not decoded here. */
int gguf_to_q8_0(int type, const uint8_t *src, long rows, long K, uint8_t *out, int nthreads) {
    long bs, ts;
    block_size(type, &bs, &ts);
    if (!bs || K % bs || K % QK) return -1;
    const long row_bytes = K / bs * ts, nb = K / QK, chunk = K < PAR_CHUNK ? PAR_CHUNK / K : 1;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, chunk) \
    if (nthreads > 1 && rows * K >= PAR_MIN)
    for (long r = 0; r < rows; r++) {
        const uint8_t *row = src + r * row_bytes;
        uint8_t *o = out + r * nb * 34;
        if (type == Q8_0) {
            memcpy(o, row, nb * 34);
            continue;
        }
        float buf[SEG];
        for (long k0 = 0; k0 < K; k0 += SEG) {
            const long n = K - k0 < SEG ? K - k0 : SEG;
            decode(type, row, k0, n, buf);
            if (type == Q4_0 || type == Q5_0) {
                for (long j = 0; j < n / QK; j++) {
                    const uint8_t *blk = row + (k0 / QK + j) * ts;
                    uint8_t *ob = o + (k0 / QK + j) * 34;
                    const float d = f16p(blk);
                    memcpy(ob, blk, 2); /* the same float16 scale */
                    for (int i = 0; i < QK; i++) {
                        const float v = buf[j * QK + i];
                        /* a zero scale: -1 where the value's sign says the integer was negative,
                         * so that q * d keeps the sign of the zero */
                        const int q = d != 0.0f ? (int)(v / d) : -(signbit(v) != signbit(d));
                        ob[2 + i] = (uint8_t)(int8_t)q;
                    }
                }
            } else {
                q8_0_quantize(buf, o + k0 / QK * 34, 1, n);
            }
        }
    }
    return 0;
}
