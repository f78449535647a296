/* One decoding step of a Gemma model with int8 block weights, in a single foreign call.
 *
 * A decode step reads every weight once but does little arithmetic per weight; driven from
 * Python it is dominated by hundreds of small framework operations per layer. Here the whole
 * step runs in C: embedding rows, per layer RMSNorm, Q/K/V projections, QK-norm, RoPE, the KV
 * cache write, attention over the cache (sliding window, soft-capping, grouped/multi-query
 * heads), output projection, sandwich norms, the GeGLU MLP, the final norm and the tied output
 * projection. B rows (sequences) advance together, each at its own position in its own cache,
 * so every weight is read once per step for all of them. Rows may also be consecutive tokens of
 * one sequence (one cache, positions p, p+1, ...: speculative decoding's verification): every
 * row's keys are written before any row attends, and each attends to positions up to its own,
 * so row t computes the same bits as the t-th of single steps (a ring cache then needs B - 1
 * slots beyond its window, so that no row evicts a key an earlier row still sees).
 *
 * The arithmetic follows opengemma.model with the int8 layers of opengemma.quantized_layers
 * (activations quantized per block of 32 before each Q8_0 projection) and the K-quant layers of
 * opengemma.stored_layers (per 256 before each Q4_K / Q6_K one, weights as the file stores
 * them); results agree with that path to float32 rounding.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "portable.h"

/* q8.c */
void q8_quantize(const float *x, int8_t *xq, float *xs, long rows, long K);
void q8_0_gemv(const int8_t *xq, const float *xs, const uint8_t *w, float *out, long B, long N,
               long K, int nthreads);
void q8_0_gather(const uint8_t *w, const int64_t *ids, float *out, long n_ids, long K);
int qb_gemv(int type, const int8_t *xq, const float *xs, const uint8_t *w, float *out, long B,
            long N, long K, int nthreads);
/* gguf_blocks.c */
int gguf_gather(int type, const uint8_t *w, const int64_t *ids, float *out, long n_ids, long K);
/* kquant.c */
void q8k_quantize(const float *x, int8_t *xq, float *xd, int16_t *bs, long rows, long K);
int kq_gemv(int type, const int8_t *xq, const float *xd, const int16_t *bs, const uint8_t *w,
            float *out, long B, long N, long K, int nthreads);

/* ggml type ids: q8.c takes Q4_0, Q5_0 and Q8_0 (activations per 32), kquant.c Q4_K and Q6_K */
enum { Q4_0 = 2, Q5_0 = 6, Q8_0 = 8 };

typedef struct {
    const uint8_t *w; /* [n] rows of k weights in GGUF blocks of `type`, as the file stores them */
    long n, k, type;
} QW;

/* activations [B, k] and their quantizations, each made once when a projection first needs it:
 * per 32 (Q8_0 weights) and per 256 with sums of 16 (K-quant weights) */
typedef struct {
    const float *x;
    long B, k;
    int8_t *q32, *qk;
    float *s32, *dk;
    int16_t *bk;
    int have32, havek;
} Act;

static Act act(const float *x, long B, long k, const Act *scratch) {
    Act a = *scratch;
    a.x = x, a.B = B, a.k = k, a.have32 = a.havek = 0;
    return a;
}

/* out [B, w->n] = x [B, w->k] @ W.T */
static void project(const QW *w, Act *a, float *out, int nthreads) {
    if (w->type == Q8_0 || w->type == Q5_0 || w->type == Q4_0) {
        if (!a->have32) q8_quantize(a->x, a->q32, a->s32, a->B, a->k), a->have32 = 1;
        qb_gemv((int)w->type, a->q32, a->s32, w->w, out, a->B, w->n, w->k, nthreads);
    } else {
        if (!a->havek) q8k_quantize(a->x, a->qk, a->dk, a->bk, a->B, a->k), a->havek = 1;
        kq_gemv((int)w->type, a->qk, a->dk, a->bk, w->w, out, a->B, w->n, w->k, nthreads);
    }
}

typedef struct {
    QW wq, wk, wv, wo, wgate, wup, wdown;
    /* norm multipliers (1 + w), NULL where the model has no such norm */
    const float *in_norm, *post_attn_norm, *pre_ffn_norm, *post_ffn_norm, *q_norm, *k_norm;
    const float *inv_freq; /* head_dim / 2 RoPE frequencies (scaling included) */
    long window;           /* sliding window; 0 for global attention */
} DLayer;

typedef struct {
    long n_layers, d, n_heads, n_kv, head_dim, ffn, vocab;
    float eps, attn_scale, attn_softcap, final_softcap, embed_scale; /* softcap 0 = none */
    QW embed;
    const float *final_norm;
    const DLayer *layers;
} DModel;

typedef struct {
    float *k, *v;  /* [n_kv, cap, head_dim] */
    int64_t *pos;  /* ring caches: the position each slot holds (-1 empty); NULL: slot = position */
    long cap;
} DCache;

static void rms_norm(const float *x, const float *mult, float *out, long n, float eps) {
    double ss = 0.0;
    for (long i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (long i = 0; i < n; i++) out[i] = x[i] * r * mult[i];
}

static void rope(float *x, long n_heads, long hd, const float *inv_freq, int64_t p) {
    long half = hd / 2;
    for (long i = 0; i < half; i++) {
        float a = (float)p * inv_freq[i];
        float c = cosf(a), s = sinf(a);
        for (long h = 0; h < n_heads; h++) {
            float *v = x + h * hd;
            float x1 = v[i], x2 = v[i + half];
            v[i] = x1 * c - x2 * s;
            v[i + half] = x2 * c + x1 * s;
        }
    }
}

/* sum of a[i] * b[i]: eight lanes at a time (a plain loop would stay scalar: the compiler may
 * not reorder a float sum) */
static inline float dot(const float *a, const float *b, long n) {
    long i = 0;
    float sum = 0.0f;
#ifdef __AVX2__
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    sum = _mm_cvtss_f32(s4);
#endif
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

static inline float softcap(float x, float cap) { return cap > 0.0f ? tanhf(x / cap) * cap : x; }

/* the cache slots a query at position p may attend to -> slots, in order of position (so that
 * a ring of any size, or a full cache, sums the same keys in the same order: the same bits);
 * returns their count */
static long visible_slots(const DLayer *L, const DCache *c, int64_t p, long *slots) {
    int64_t first = L->window > 0 && p - L->window + 1 > 0 ? p - L->window + 1 : 0;
    long n = 0;
    for (int64_t q = first; q <= p; q++) {
        long s = c->pos ? (long)(q % c->cap) : (long)q;
        if (s >= c->cap) break;
        if (c->pos && c->pos[s] != q) continue; /* not held (evicted or never written) */
        slots[n++] = s;
    }
    return n;
}

/* one query head qh [hd] over n cache slots of its key/value head -> oh [hd] */
static void attend_head(const DModel *m, const DCache *c, long g, const float *qh, long n,
                        const long *slots, float *scores, float *oh) {
    long hd = m->head_dim;
    const float *kc = c->k + g * c->cap * hd, *vc = c->v + g * c->cap * hd;
    float mx = -INFINITY;
    for (long i = 0; i < n; i++) {
        float sc = softcap(dot(qh, kc + slots[i] * hd, hd) * m->attn_scale, m->attn_softcap);
        scores[i] = sc;
        if (sc > mx) mx = sc;
    }
    float sum = 0.0f;
    for (long i = 0; i < n; i++) sum += scores[i] = expf(scores[i] - mx);
    float inv = 1.0f / sum;
    for (long j = 0; j < hd; j++) oh[j] = 0.0f;
    for (long i = 0; i < n; i++) {
        float w = scores[i] * inv;
        const float *vr = vc + slots[i] * hd;
        for (long j = 0; j < hd; j++) oh[j] += w * vr[j];
    }
}

static inline float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

#ifdef __AVX512F__
/* e^x for 16 floats: 2^n * e^r with |r| <= ln2 / 2 and Cephes' expf polynomial (relative error
 * ~1e-7); inputs clamped to the finite range */
static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x); /* ln 2 in two parts */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}
#endif

/* gate = gelu_tanh(gate) * up. Sixteen at a time as x * sigmoid(2u) = x / (1 + e^(-2u)), the
 * same function as 0.5 x (1 + tanh u) (and without its cancellation for negative x): the
 * scalar tanhf took 6% of a decode step. */
static void gelu_mul(float *gate, const float *up, long n) {
    long i = 0;
#ifdef __AVX512F__
    const __m512 k = _mm512_set1_ps(0.7978845608028654f), c = _mm512_set1_ps(0.044715f);
    const __m512 one = _mm512_set1_ps(1.0f), minus2 = _mm512_set1_ps(-2.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_loadu_ps(gate + i);
        __m512 u = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_mul_ps(c, _mm512_mul_ps(x, x)), x, x));
        __m512 y = _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_mul_ps(minus2, u))));
        _mm512_storeu_ps(gate + i, _mm512_mul_ps(y, _mm512_loadu_ps(up + i)));
    }
#endif
    for (; i < n; i++) gate[i] = gelu_tanh(gate[i]) * up[i];
}

/* x = tanh(x / cap) * cap over a whole logits row (256k of them: a scalar tanhf per logit
 * costs milliseconds); tanh y = 1 - 2 / (e^(2y) + 1), sixteen at a time */
static void softcap_all(float *x, long n, float cap) {
    long i = 0;
#ifdef __AVX512F__
    const __m512 two_over_cap = _mm512_set1_ps(2.0f / cap), vcap = _mm512_set1_ps(cap);
    const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp16(_mm512_mul_ps(_mm512_loadu_ps(x + i), two_over_cap));
        __m512 t = _mm512_sub_ps(one, _mm512_div_ps(two, _mm512_add_ps(e, one)));
        _mm512_storeu_ps(x + i, _mm512_mul_ps(t, vcap));
    }
#endif
    for (; i < n; i++) x[i] = softcap(x[i], cap);
}

static long max_l(long a, long b) { return a > b ? a : b; }

/* Advance B sequences by one token each. ids, pos: [B]; caches: B pointers, each to that
 * sequence's n_layers layer caches; logits: [B, vocab]. Returns 0, or -1 if out of memory. */
int decode_step(const DModel *m, const int64_t *ids, const int64_t *pos, long B,
                const DCache *const *caches, float *logits, int nthreads) {
    long d = m->d, hd = m->head_dim, H = m->n_heads, KV = m->n_kv;
    long qdim = H * hd, kvdim = KV * hd, widest = max_l(max_l(d, qdim), m->ffn);
    long max_cap = 1;
    for (long b = 0; b < B; b++)
        for (long l = 0; l < m->n_layers; l++) max_cap = max_l(max_cap, caches[b][l].cap);
    size_t floats = (size_t)B * (2 * d + qdim + 2 * kvdim + qdim + 2 * m->ffn + H * max_cap);
    /* + int8 activations and their scales: per 32, and per 256 with sums of 16 */
    size_t act_bytes = (size_t)B * widest * 2 + (size_t)B * widest / 32 * sizeof(float) +
                       (size_t)B * widest / 256 * sizeof(float) +
                       (size_t)B * widest / 16 * sizeof(int16_t);
    float *buf = malloc(floats * sizeof(float) + act_bytes + 64);
    long *slots = malloc((size_t)B * max_cap * sizeof(long)), n_slots[B];
    if (!buf || !slots) {
        free(buf);
        free(slots);
        return -1;
    }
    float *x = buf, *h = x + B * d, *q = h + B * d, *k = q + B * qdim, *v = k + B * kvdim;
    float *att = v + B * kvdim, *gate = att + B * qdim, *up = gate + B * m->ffn;
    float *scores = up + B * m->ffn;
    Act sa = {0};
    sa.s32 = scores + B * H * max_cap, sa.dk = sa.s32 + B * widest / 32;
    sa.bk = (int16_t *)(sa.dk + B * widest / 256);
    sa.q32 = (int8_t *)(sa.bk + B * widest / 16), sa.qk = sa.q32 + B * widest;

    if (m->embed.type == Q8_0)
        q8_0_gather(m->embed.w, ids, x, B, d);
    else if (gguf_gather((int)m->embed.type, m->embed.w, ids, x, B, d))
        return free(buf), free(slots), -2;
    for (long i = 0; i < B * d; i++) x[i] *= m->embed_scale;

    for (long l = 0; l < m->n_layers; l++) {
        const DLayer *L = &m->layers[l];
        for (long b = 0; b < B; b++) rms_norm(x + b * d, L->in_norm, h + b * d, d, m->eps);
        Act ah = act(h, B, d, &sa); /* one quantization shared by q, k and v */
        project(&L->wq, &ah, q, nthreads);
        project(&L->wk, &ah, k, nthreads);
        project(&L->wv, &ah, v, nthreads);
        for (long b = 0; b < B; b++) {
            float *qb = q + b * qdim, *kb = k + b * kvdim, *vb = v + b * kvdim;
            if (L->q_norm)
                for (long i = 0; i < H; i++) rms_norm(qb + i * hd, L->q_norm, qb + i * hd, hd, m->eps);
            if (L->k_norm)
                for (long i = 0; i < KV; i++) rms_norm(kb + i * hd, L->k_norm, kb + i * hd, hd, m->eps);
            rope(qb, H, hd, L->inv_freq, pos[b]);
            rope(kb, KV, hd, L->inv_freq, pos[b]);
            const DCache *c = &caches[b][l];
            long slot = c->pos ? pos[b] % c->cap : pos[b];
            for (long g = 0; g < KV; g++) {
                memcpy(c->k + (g * c->cap + slot) * hd, kb + g * hd, hd * sizeof(float));
                memcpy(c->v + (g * c->cap + slot) * hd, vb + g * hd, hd * sizeof(float));
            }
            if (c->pos) c->pos[slot] = pos[b];
            n_slots[b] = visible_slots(L, c, pos[b], slots + b * max_cap);
        }
        long work = 0;
        for (long b = 0; b < B; b++) work += n_slots[b];
        /* every (row, head) pair on its own: worth threads once the contexts grow */
#pragma omp parallel for num_threads(nthreads) schedule(dynamic) if (nthreads > 1 && work * qdim > (1L << 17))
        for (long bh = 0; bh < B * H; bh++) {
            long b = bh / H, i = bh % H;
            attend_head(m, &caches[b][l], i / (H / KV), q + b * qdim + i * hd, n_slots[b],
                        slots + b * max_cap, scores + bh * max_cap, att + b * qdim + i * hd);
        }
        Act aa = act(att, B, qdim, &sa);
        project(&L->wo, &aa, h, nthreads);
        for (long b = 0; b < B; b++) {
            float *hb = h + b * d, *xb = x + b * d;
            if (L->post_attn_norm) rms_norm(hb, L->post_attn_norm, hb, d, m->eps);
            for (long i = 0; i < d; i++) xb[i] += hb[i];
            rms_norm(xb, L->pre_ffn_norm, hb, d, m->eps);
        }
        Act af = act(h, B, d, &sa); /* shared by gate and up */
        project(&L->wgate, &af, gate, nthreads);
        project(&L->wup, &af, up, nthreads);
        for (long b = 0; b < B; b++) gelu_mul(gate + b * m->ffn, up + b * m->ffn, m->ffn);
        Act ag = act(gate, B, m->ffn, &sa);
        project(&L->wdown, &ag, h, nthreads);
        for (long b = 0; b < B; b++) {
            float *hb = h + b * d, *xb = x + b * d;
            if (L->post_ffn_norm) rms_norm(hb, L->post_ffn_norm, hb, d, m->eps);
            for (long i = 0; i < d; i++) xb[i] += hb[i];
        }
    }
    for (long b = 0; b < B; b++) rms_norm(x + b * d, m->final_norm, h + b * d, d, m->eps);
    Act ao = act(h, B, d, &sa);
    project(&m->embed, &ao, logits, nthreads);
    if (m->final_softcap > 0.0f) /* row by row: each row's bits independent of the batch */
        for (long b = 0; b < B; b++) softcap_all(logits + b * m->vocab, m->vocab, m->final_softcap);
    free(buf);
    free(slots);
    return 0;
}
