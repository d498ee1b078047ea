/* nlu-bert's native int8 BERT encoder for x86-64 CPUs with AVX-512 VNNI.
 *
 * One call runs every encoder layer of a BERT model on a batch of token rows:
 * int8 weights (symmetric, per output channel), activations quantized per token row (asymmetric u8),
 * int32 accumulation with VPDPBUSD, fp32 attention / GELU / LayerNorm. The Python side
 * (nlu_bert/native/__init__.py) quantizes and packs the weights, computes the embeddings and the
 * classification head, and calls nb_encode(). Python checks the CPU flags before it loads this library.
 *
 * Why a kernel of our own: at 16 tokens onnxruntime's int8 GEMMs read the 85 MB of BERT-base weights
 * and compute without overlapping the two (benchmarks/int8_gemm_kernels.py). This kernel streams each
 * 16-column weight panel once with software prefetch while 16 accumulators per token tile keep the VNNI
 * units busy.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define TILE 16        /* token rows per packed activation tile */
#define PANEL 16       /* output columns per weight panel (one zmm of int32) */
#define PREFETCH 32    /* weight cache lines prefetched ahead */
#define ROW_BLOCK 128  /* token rows whose activations stay in L2 while the panels stream */

typedef struct {
    const int8_t *w[4];       /* packed [N/16][K/4][16][4]; 0 qkv, 1 attention output, 2 ffn in, 3 ffn out */
    const float *scale[4];    /* [N] weight scale per output column */
    const int32_t *colsum[4]; /* [N] sum over k of the int8 weights (the activation zero point's term) */
    const float *bias[4];     /* [N] */
    const float *ln1_gamma, *ln1_beta, *ln2_gamma, *ln2_beta;
} nb_layer;

int nb_abi_version(void) { return 2; }

/* ---------------------------------------------------------------------------------- math */
static inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
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

/* GELU with the exact erf (transformers' "gelu"): erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). */
static inline __m512 gelu512(__m512 x) {
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678f));
    __m512 a = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    p = _mm512_mul_ps(p, t);
    __m512 e = exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a));
    __m512 erf_abs = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));
    __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 erf = _mm512_mask_sub_ps(erf_abs, neg, _mm512_setzero_ps(), erf_abs);
    return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), _mm512_add_ps(erf, _mm512_set1_ps(1.0f)));
}

/* ------------------------------------------------------------------- activation quantization */
/* Row x [K] -> u8 q [K] with its own scale and zero point (onnxruntime's DynamicQuantizeLinear, per row). */
static void quantize_row(const float *x, int K, uint8_t *q_out, float *scale_out, int32_t *zp_out) {
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 16) {
        __m512 v = _mm512_loadu_ps(x + k);
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    float mn = _mm512_reduce_min_ps(lo), mx = _mm512_reduce_max_ps(hi);
    float scale = (mx - mn) / 255.0f;
    if (!(scale > 0.0f)) scale = 1.0f;
    float zpf = nearbyintf(-mn / scale);
    int32_t zp = zpf < 0.0f ? 0 : (zpf > 255.0f ? 255 : (int32_t)zpf);
    __m512 inv = _mm512_set1_ps(1.0f / scale);
    __m512i zpv = _mm512_set1_epi32(zp);
    for (int k = 0; k < K; k += 16) {
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), inv)), zpv);
        q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), _mm512_set1_epi32(255));
        _mm_storeu_si128((__m128i *)(q_out + k), _mm512_cvtepi32_epi8(q));
    }
    *scale_out = scale;
    *zp_out = zp;
}

/* ------------------------------------------------------------------------------------- GEMM */
/* a_tile: 16 rows of u8 activations [16][K]. out[r][n0..n0+16) = (sum_k a[r][k] w[k][n] - zp[r] colsum[n]) * sa[r] * sw[n] + bias[n] (then GELU),
 * for the `rows` valid rows of one 16-row tile. MR accumulators, MR <= 16. */
#define MICRO(MR)                                                                                           \
    static void micro##MR(const uint8_t *a_tile, int K, const int8_t *panel, int rows, const float *sa,        \
                          const int32_t *zp, const float *sw, const int32_t *colsum, const float *bias,        \
                          int gelu, float *out, int ldo) {                                                    \
        __m512i acc[MR];                                                                                    \
        for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_si512();                                       \
        const int8_t *b = panel;                                                                            \
        for (int k = 0; k < K; k += 4, b += 64) {                                                           \
            _mm_prefetch((const char *)(b + 64 * PREFETCH), _MM_HINT_T0);                                   \
            __m512i bv = _mm512_loadu_si512((const void *)b);                                                \
            for (int i = 0; i < MR; i++)                                                                    \
                acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_set1_epi32(*(const int32_t *)(a_tile + (size_t)i * K + k)), bv); \
        }                                                                                                   \
        __m512 swv = _mm512_loadu_ps(sw), bv = _mm512_loadu_ps(bias);                                       \
        __m512i cs = _mm512_loadu_si512((const void *)colsum);                                              \
        for (int i = 0; i < MR && i < rows; i++) {                                                          \
            __m512i c = _mm512_sub_epi32(acc[i], _mm512_mullo_epi32(_mm512_set1_epi32(zp[i]), cs));         \
            __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), _mm512_mul_ps(_mm512_set1_ps(sa[i]), swv), bv); \
            if (gelu) v = gelu512(v);                                                                       \
            _mm512_storeu_ps(out + (size_t)i * ldo, v);                                                     \
        }                                                                                                   \
    }
MICRO(16)
MICRO(8)
MICRO(4)

/* Inside a parallel region: quantize x [R][K], then out [R][N] = x W + bias (GELU if asked). */
static void linear(const float *x, int R, int K, int N, const int8_t *w, const float *sw, const int32_t *colsum,
                   const float *bias, int gelu, float *out, uint8_t *qa, float *sa, int32_t *zp) {
    #pragma omp for schedule(static)
    for (int r = 0; r < R; r++) quantize_row(x + (size_t)r * K, K, qa + (size_t)r * K, sa + r, zp + r);
    int tiles = (R + TILE - 1) / TILE;
    for (int t0 = 0; t0 < tiles; t0 += ROW_BLOCK / TILE) {
        int t1 = t0 + ROW_BLOCK / TILE < tiles ? t0 + ROW_BLOCK / TILE : tiles;
        #pragma omp for schedule(static)
        for (int j = 0; j < N / PANEL; j++) {
            const int8_t *panel = w + (size_t)j * K * PANEL;
            for (int t = t0; t < t1; t++) {
                int r0 = t * TILE, rows = R - r0 < TILE ? R - r0 : TILE;
                const uint8_t *a = qa + (size_t)t * K * TILE;
                float *o = out + (size_t)r0 * N + j * PANEL;
                if (rows > 8)
                    micro16(a, K, panel, rows, sa + r0, zp + r0, sw + j * PANEL, colsum + j * PANEL, bias + j * PANEL, gelu, o, N);
                else if (rows > 4)
                    micro8(a, K, panel, rows, sa + r0, zp + r0, sw + j * PANEL, colsum + j * PANEL, bias + j * PANEL, gelu, o, N);
                else
                    micro4(a, K, panel, rows, sa + r0, zp + r0, sw + j * PANEL, colsum + j * PANEL, bias + j * PANEL, gelu, o, N);
            }
        }
    }
}

/* x[r] = LayerNorm(y[r] + x[r]) for every row (inside a parallel region). */
static void add_layer_norm(float *x, const float *y, int R, int H, const float *gamma, const float *beta, float eps) {
    #pragma omp for schedule(static)
    for (int r = 0; r < R; r++) {
        float *xr = x + (size_t)r * H;
        const float *yr = y + (size_t)r * H;
        __m512 s = _mm512_setzero_ps();
        for (int k = 0; k < H; k += 16) {
            __m512 v = _mm512_add_ps(_mm512_loadu_ps(xr + k), _mm512_loadu_ps(yr + k));
            _mm512_storeu_ps(xr + k, v);
            s = _mm512_add_ps(s, v);
        }
        float mean = _mm512_reduce_add_ps(s) / H;
        __m512 m = _mm512_set1_ps(mean), q = _mm512_setzero_ps();
        for (int k = 0; k < H; k += 16) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(xr + k), m);
            q = _mm512_fmadd_ps(d, d, q);
        }
        __m512 inv = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(q) / H + eps));
        for (int k = 0; k < H; k += 16) {
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xr + k), m), inv);
            _mm512_storeu_ps(xr + k, _mm512_fmadd_ps(d, _mm512_loadu_ps(gamma + k), _mm512_loadu_ps(beta + k)));
        }
    }
}

/* Scaled dot-product attention for every (message, head) of qkv [B*T][3H] into ctx [B*T][H]. The head's
 * keys are transposed first so that each query's scores are vectorized over the keys. */
static void attention(const float *qkv, const int64_t *mask, int B, int T, int H, int heads, float *ctx) {
    int d = H / heads, Tp = (T + 15) / 16 * 16;
    float norm = 1.0f / sqrtf((float)d);
    #pragma omp for schedule(static)
    for (int bh = 0; bh < B * heads; bh++) {
        int b = bh / heads, h = bh % heads;
        float kt[d * Tp], scores[Tp], bias[Tp];
        const float *base = qkv + (size_t)b * T * 3 * H;
        for (int j = 0; j < Tp; j++) {
            int real = j < T;
            bias[j] = real && mask[(size_t)b * T + j] ? 0.0f : -1e30f;
            const float *k = base + (size_t)j * 3 * H + H + h * d;
            for (int e = 0; e < d; e++) kt[e * Tp + j] = real ? k[e] * norm : 0.0f;
        }
        for (int i = 0; i < T; i++) {
            const float *q = base + (size_t)i * 3 * H + h * d;
            for (int j = 0; j < Tp; j += 16) {
                __m512 s = _mm512_loadu_ps(bias + j);
                for (int e = 0; e < d; e++) s = _mm512_fmadd_ps(_mm512_set1_ps(q[e]), _mm512_loadu_ps(kt + e * Tp + j), s);
                _mm512_storeu_ps(scores + j, s);
            }
            float mx = -INFINITY;
            for (int j = 0; j < T; j++) mx = scores[j] > mx ? scores[j] : mx;
            float sum = 0.0f;
            for (int j = 0; j < T; j++) { scores[j] = expf(scores[j] - mx); sum += scores[j]; }
            float inv = 1.0f / sum;
            float *c = ctx + ((size_t)b * T + i) * H + h * d;
            for (int e = 0; e < d; e += 16) {
                __mmask16 lanes = d - e >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (d - e)) - 1);
                __m512 acc = _mm512_setzero_ps();
                for (int j = 0; j < T; j++)
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(scores[j]), _mm512_maskz_loadu_ps(lanes, base + (size_t)j * 3 * H + 2 * H + h * d + e), acc);
                _mm512_mask_storeu_ps(c + e, lanes, _mm512_mul_ps(acc, _mm512_set1_ps(inv)));
            }
        }
    }
}

/* Bytes of the workspace nb_encode needs for B*T token rows. */
size_t nb_workspace_bytes(int B, int T, int H, int inter) {
    size_t R = (size_t)B * T, rows = (R + TILE - 1) / TILE * TILE, widest = inter > 3 * H ? inter : 3 * H;
    return (R * widest + 2 * R * H) * sizeof(float) + rows * widest + rows * (sizeof(float) + sizeof(int32_t)) + 4 * 64;
}

static char *carve(char **cursor, size_t bytes) {
    char *p = *cursor;
    *cursor += (bytes + 63) / 64 * 64;
    return p;
}

/* The encoder layers over x [B*T][H] (the embeddings after their LayerNorm), in place. `workspace` (64-byte
 * aligned, nb_workspace_bytes() long) holds the intermediate activations: the caller keeps it between calls
 * (fresh buffers every call cost page faults and cache misses). H and the intermediate size must be multiples
 * of 16, H a multiple of the number of heads. */
void nb_encode(float *x, const int64_t *mask, int B, int T, int H, int heads, int inter, int n_layers,
               const nb_layer *layers, float eps, int threads, void *workspace) {
    int R = B * T, rows = (R + TILE - 1) / TILE * TILE, widest = inter > 3 * H ? inter : 3 * H;
    char *cursor = (char *)workspace;
    float *big = (float *)carve(&cursor, (size_t)R * widest * sizeof(float));
    float *ctx = (float *)carve(&cursor, (size_t)R * H * sizeof(float));
    float *tmp = (float *)carve(&cursor, (size_t)R * H * sizeof(float));
    uint8_t *qa = (uint8_t *)carve(&cursor, (size_t)rows * widest);
    float *sa = (float *)carve(&cursor, rows * sizeof(float));
    int32_t *zp = (int32_t *)carve(&cursor, rows * sizeof(int32_t));
    #pragma omp parallel num_threads(threads > 0 ? threads : omp_get_num_procs())
    for (int l = 0; l < n_layers; l++) {
        const nb_layer *L = layers + l;
        linear(x, R, H, 3 * H, L->w[0], L->scale[0], L->colsum[0], L->bias[0], 0, big, qa, sa, zp);
        attention(big, mask, B, T, H, heads, ctx);
        linear(ctx, R, H, H, L->w[1], L->scale[1], L->colsum[1], L->bias[1], 0, tmp, qa, sa, zp);
        add_layer_norm(x, tmp, R, H, L->ln1_gamma, L->ln1_beta, eps);
        linear(x, R, H, inter, L->w[2], L->scale[2], L->colsum[2], L->bias[2], 1, big, qa, sa, zp);
        linear(big, R, inter, H, L->w[3], L->scale[3], L->colsum[3], L->bias[3], 0, tmp, qa, sa, zp);
        add_layer_norm(x, tmp, R, H, L->ln2_gamma, L->ln2_beta, eps);
    }
}
