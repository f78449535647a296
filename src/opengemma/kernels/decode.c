/* One decoding step of a Gemma model with int8 block weights, in a single foreign call.
 *
 * A decode step reads every weight once but does little arithmetic per weight; driven from
 * Python it is dominated by hundreds of small framework operations per layer. Here the whole
 * step runs in C: embedding rows, per layer RMSNorm, Q/K/V projections, QK-norm, RoPE, the KV
 * cache write, attention over the cache (sliding window, soft-capping, grouped/multi-query
 * heads), output projection, sandwich norms, the GeGLU MLP, the final norm and the tied output
 * projection. B rows (sequences) advance together, each at its own position in its own cache,
 * so every weight is read once per step for all of them.
 *
 * The arithmetic follows opengemma.model with the int8 layers of opengemma.quant (activations
 * quantized per block of 32 before each projection); results agree with that path to float32
 * rounding.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

/* q8.c */
void q8_quantize(const float *x, int8_t *xq, float *xs, long rows, long K);
void q8_0_gemv(const int8_t *xq, const float *xs, const uint8_t *w, float *out, long B, long N,
               long K, int nthreads);
void q8_0_gather(const uint8_t *w, const int64_t *ids, float *out, long n_ids, long K);

typedef struct {
    const uint8_t *w; /* Q8_0 blocks [n, k / 32] */
    long n, k;
} QW;

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

/* out = x @ W.T for B rows; activations quantized into the shared scratch */
static void linear(const float *x, const QW *w, float *out, long B, int8_t *xq, float *xs,
                   int nthreads) {
    q8_quantize(x, xq, xs, B, w->k);
    q8_0_gemv(xq, xs, w->w, out, B, w->n, w->k, nthreads);
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

/* the cache slots a query at position p may attend to -> slots; returns their count */
static long visible_slots(const DLayer *L, const DCache *c, int64_t p, long *slots) {
    long n = 0;
    for (long s = 0; s < c->cap; s++) {
        int64_t kp = c->pos ? c->pos[s] : s;
        if (kp < 0 || kp > p || (L->window > 0 && kp <= p - L->window)) continue;
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
    float *buf = malloc(floats * sizeof(float) + (size_t)B * widest * (1 + sizeof(float)));
    long *slots = malloc((size_t)B * max_cap * sizeof(long)), n_slots[B];
    if (!buf || !slots) {
        free(buf);
        free(slots);
        return -1;
    }
    float *x = buf, *h = x + B * d, *q = h + B * d, *k = q + B * qdim, *v = k + B * kvdim;
    float *att = v + B * kvdim, *gate = att + B * qdim, *up = gate + B * m->ffn;
    float *scores = up + B * m->ffn, *xs = scores + B * H * max_cap;
    int8_t *xq = (int8_t *)(xs + B * widest / 32);

    q8_0_gather(m->embed.w, ids, x, B, d);
    for (long i = 0; i < B * d; i++) x[i] *= m->embed_scale;

    for (long l = 0; l < m->n_layers; l++) {
        const DLayer *L = &m->layers[l];
        for (long b = 0; b < B; b++) rms_norm(x + b * d, L->in_norm, h + b * d, d, m->eps);
        q8_quantize(h, xq, xs, B, d); /* one quantization shared by q, k and v */
        q8_0_gemv(xq, xs, L->wq.w, q, B, qdim, d, nthreads);
        q8_0_gemv(xq, xs, L->wk.w, k, B, kvdim, d, nthreads);
        q8_0_gemv(xq, xs, L->wv.w, v, B, kvdim, d, nthreads);
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
        linear(att, &L->wo, h, B, xq, xs, nthreads);
        for (long b = 0; b < B; b++) {
            float *hb = h + b * d, *xb = x + b * d;
            if (L->post_attn_norm) rms_norm(hb, L->post_attn_norm, hb, d, m->eps);
            for (long i = 0; i < d; i++) xb[i] += hb[i];
            rms_norm(xb, L->pre_ffn_norm, hb, d, m->eps);
        }
        q8_quantize(h, xq, xs, B, d); /* shared by gate and up */
        q8_0_gemv(xq, xs, L->wgate.w, gate, B, m->ffn, d, nthreads);
        q8_0_gemv(xq, xs, L->wup.w, up, B, m->ffn, d, nthreads);
        for (long i = 0; i < B * m->ffn; i++) gate[i] = gelu_tanh(gate[i]) * up[i];
        linear(gate, &L->wdown, h, B, xq, xs, nthreads);
        for (long b = 0; b < B; b++) {
            float *hb = h + b * d, *xb = x + b * d;
            if (L->post_ffn_norm) rms_norm(hb, L->post_ffn_norm, hb, d, m->eps);
            for (long i = 0; i < d; i++) xb[i] += hb[i];
        }
    }
    for (long b = 0; b < B; b++) rms_norm(x + b * d, m->final_norm, h + b * d, d, m->eps);
    linear(h, &m->embed, logits, B, xq, xs, nthreads);
    if (m->final_softcap > 0.0f)
        for (long i = 0; i < B * m->vocab; i++) logits[i] = softcap(logits[i], m->final_softcap);
    free(buf);
    free(slots);
    return 0;
}
