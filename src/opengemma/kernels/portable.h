/* Pieces shared by the kernel sources that have an instruction-set version and a portable one.
 *
 * x86 intrinsics are included only on x86; every use of them is guarded by the feature macro the
 * compiler defines for the variant's flags (__F16C__, __AVX2__, __AVX512F__, ...), so the portable
 * build (`generic`: no -march beyond the baseline) compiles on any architecture.
 */
#ifndef OPENGEMMA_PORTABLE_H
#define OPENGEMMA_PORTABLE_H
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <immintrin.h>
#endif

static inline float og_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half -> float exactly as numpy: subnormals exact, NaN payloads kept (not quieted) */
static inline float og_f16_exact(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu;
    if (em >= 0x7c00u) return og_bits_f32(sign | 0x7f800000u | (em & 0x3ffu) << 13);
    if (em >= 0x0400u) return og_bits_f32(sign | (em + ((127 - 15) << 10)) << 13);
    const float mag = (float)em * 0x1p-24f; /* subnormal or zero: exact */
    return sign ? -mag : mag;
}

/* IEEE half -> float (F16C where the variant has it: the same value for every non-NaN) */
static inline float og_f16_to_f32(uint16_t h) {
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    return og_f16_exact(h);
#endif
}

/* float -> IEEE half, rounded to nearest even (as F16C's _cvtss_sh and numpy) */
static inline uint16_t og_f32_to_f16(float f) {
#ifdef __F16C__
    return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | (ax >> 13 & 0x3ffu)); /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520: infinity */
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half; the FPU rounds at 2^-24 */
        float r = og_bits_f32(ax) + 0.5f;
        uint32_t rb;
        memcpy(&rb, &r, 4);
        return (uint16_t)(sign | (rb - 0x3f000000u));
    }
    ax += ((uint32_t)(15 - 127) << 23) + 0xfffu + ((ax >> 13) & 1u);
    return (uint16_t)(sign | (ax >> 13));
#endif
}

/* the 8 6-bit scales and mins of a Q4_K / Q5_K super-block (its 12 scale bytes at s) */
static inline void og_scale_min_k4(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 15) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
}
#endif
