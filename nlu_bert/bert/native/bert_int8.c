/* nlu-bert's native int8 BERT encoder for x86-64 CPUs with AVX-512 VNNI (and AMX where the CPU has it).
 *
 * One call runs every encoder layer of a BERT model on a batch of token rows:
 * int8 weights (symmetric, per output channel), activations quantized per token row (asymmetric u8),
 * int32 accumulation with VPDPBUSD or, on CPUs with AMX (Intel Sapphire Rapids and newer), with TDPBUSD on
 * 16x64 tiles; fp32 attention / GELU / LayerNorm. Both paths accumulate the same int32 sums and share the
 * epilogue, so they give bitwise the same results. The Python side
 * (nlu_bert/bert/native/__init__.py) quantizes and packs the weights, computes the embeddings and the
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

#if defined(__AMX_TILE__) && defined(__AMX_INT8__)
#define NB_AMX 1 /* built with AMX (setup.py adds -mamx-tile -mamx-int8 where the compiler has them) */
#include <sys/syscall.h>
#include <unistd.h>
#else
#define NB_AMX 0
#endif

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

int nb_abi_version(void) { return 3; }

/* 1 when this library holds the AMX path. */
int nb_amx_compiled(void) { return NB_AMX; }

/* Ask Linux for permission to use the AMX tile registers (once per process, for every thread); 0 = granted. */
int nb_amx_request(void) {
#if NB_AMX
    return (int)syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */);
#else
    return -1;
#endif
}

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
/* One output row of 16 columns from its int32 sums: (acc - zp colsum) * sa * sw + bias, then GELU if asked.
 * Both the VNNI and the AMX path finish here, so they round alike. */
static inline void finish_row(__m512i acc, int32_t zp, float sa, __m512i colsum, __m512 sw, __m512 bias, int gelu,
                              float *out) {
    __m512i c = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(zp), colsum));
    __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), _mm512_mul_ps(_mm512_set1_ps(sa), sw), bias);
    if (gelu) v = gelu512(v);
    _mm512_storeu_ps(out, v);
}

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
        for (int i = 0; i < MR && i < rows; i++)                                                            \
            finish_row(acc[i], zp[i], sa[i], cs, swv, bv, gelu, out + (size_t)i * ldo);                    \
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

#if NB_AMX
/* ---------------------------------------------------------------------------------- AMX GEMM */
/* Weights for AMX are regrouped at load (nlu_bert/bert/native/__init__.py, amx_groups): [N/64][K/64][4][16][64], so
 * the 4 KB that one step of a 64-column group multiplies (4 panels x 64 k) lie together and a group streams from
 * memory in order. A tiles: 16 token rows x 64 k of u8 activations (row stride K); B tiles: 64 k x 16 columns,
 * VNNI-packed (16 rows of 4 k x 16 columns, the panel layout itself); C tiles: 16 x 16 int32. K and N must be
 * multiples of 64. */
#define AMX_PREFETCH 2 /* steps (4 KB each) of the group prefetched into L2 ahead of the first pass */

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} nb_tilecfg;

static void amx_configure(void) {
    nb_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);
}

static inline void amx_prefetch(const int8_t *step) {
    for (int l = 0; l < 4096; l += 64) _mm_prefetch((const char *)step + l, _MM_HINT_T1);
}

/* acc: int32 [rows][ld] from the tiles; finish `rows` rows of `panels` 16-column panels starting at column n0. */
static void amx_finish(const int32_t *acc, int ld, int rows, int panels, int n0, const float *sa, const int32_t *zp,
                       const float *sw, const int32_t *colsum, const float *bias, int gelu, float *out, int ldo) {
    for (int q = 0; q < panels; q++) {
        int n = n0 + 16 * q;
        __m512 swv = _mm512_loadu_ps(sw + n), bv = _mm512_loadu_ps(bias + n);
        __m512i cs = _mm512_loadu_si512((const void *)(colsum + n));
        for (int i = 0; i < rows; i++)
            finish_row(_mm512_load_si512((const void *)(acc + (size_t)i * ld + 16 * q)), zp[i], sa[i], cs, swv, bv, gelu,
                       out + (size_t)i * ldo + n);
    }
}

/* linear() with AMX tiles: two 16-row tiles x two panels at a time where two row tiles remain (each weight
 * tile loaded once serves 32 tokens), else one row tile x four panels. */
static void linear_amx(const float *x, int R, int K, int N, const int8_t *w, const float *sw, const int32_t *colsum,
                       const float *bias, int gelu, float *out, uint8_t *qa, float *sa, int32_t *zp) {
    #pragma omp for schedule(static)
    for (int r = 0; r < R; r++) quantize_row(x + (size_t)r * K, K, qa + (size_t)r * K, sa + r, zp + r);
    int T = (R + TILE - 1) / TILE, KB = K / 64;
    int32_t acc[32 * 32] __attribute__((aligned(64)));
    #pragma omp for schedule(static)
    for (int g = 0; g < N / 64; g++) {
        const int8_t *group = w + (size_t)g * KB * 4096;
        int t = 0;
        for (; t + 1 < T; t += 2) {
            const uint8_t *a0 = qa + (size_t)t * TILE * K, *a1 = a0 + (size_t)TILE * K;
            int rows0 = TILE, rows1 = R - (t + 1) * TILE < TILE ? R - (t + 1) * TILE : TILE;
            for (int half = 0; half < 2; half++) {
                _tile_zero(4); _tile_zero(5); _tile_zero(6); _tile_zero(7);
                for (int j = 0; j < KB; j++) {
                    const int8_t *b = group + (size_t)j * 4096 + half * 2048;
                    if (t == 0 && half == 0 && j + AMX_PREFETCH < KB) amx_prefetch(group + (size_t)(j + AMX_PREFETCH) * 4096);
                    _tile_loadd(0, a0 + j * 64, K);
                    _tile_loadd(2, b, 64);
                    _tile_dpbusd(4, 0, 2);
                    _tile_loadd(3, b + 1024, 64);
                    _tile_dpbusd(5, 0, 3);
                    _tile_loadd(1, a1 + j * 64, K);
                    _tile_dpbusd(6, 1, 2);
                    _tile_dpbusd(7, 1, 3);
                }
                _tile_stored(4, acc, 128);
                _tile_stored(5, acc + 16, 128);
                _tile_stored(6, acc + 16 * 32, 128);
                _tile_stored(7, acc + 16 * 32 + 16, 128);
                int n0 = 64 * g + 32 * half, r0 = t * TILE;
                amx_finish(acc, 32, rows0, 2, n0, sa + r0, zp + r0, sw, colsum, bias, gelu, out + (size_t)r0 * N, N);
                amx_finish(acc + 16 * 32, 32, rows1, 2, n0, sa + r0 + TILE, zp + r0 + TILE, sw, colsum, bias, gelu,
                           out + (size_t)(r0 + TILE) * N, N);
            }
        }
        for (; t < T; t++) {
            const uint8_t *a = qa + (size_t)t * TILE * K;
            int r0 = t * TILE, rows = R - r0 < TILE ? R - r0 : TILE;
            _tile_zero(4); _tile_zero(5); _tile_zero(6); _tile_zero(7);
            for (int j = 0; j < KB; j++) {
                const int8_t *b = group + (size_t)j * 4096;
                if (t == 0 && j + AMX_PREFETCH < KB) amx_prefetch(group + (size_t)(j + AMX_PREFETCH) * 4096);
                _tile_loadd(0, a + j * 64, K);
                _tile_loadd(1, b, 64);
                _tile_loadd(2, b + 1024, 64);
                _tile_dpbusd(4, 0, 1);
                _tile_loadd(3, b + 2048, 64);
                _tile_dpbusd(5, 0, 2);
                _tile_loadd(1, b + 3072, 64);
                _tile_dpbusd(6, 0, 3);
                _tile_dpbusd(7, 0, 1);
            }
            _tile_stored(4, acc, 256);
            _tile_stored(5, acc + 16, 256);
            _tile_stored(6, acc + 32, 256);
            _tile_stored(7, acc + 48, 256);
            amx_finish(acc, 64, rows, 4, 64 * g, sa + r0, zp + r0, sw, colsum, bias, gelu, out + (size_t)r0 * N, N);
        }
    }
}
#endif

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
 * keys are transposed first so that each query's scores are vectorized over the keys; QB queries go together,
 * so that QB independent FMA chains hide the FMA latency (one chain per query left the FMA units mostly idle:
 * half the time of a 64-token forward pass). Padding and masked keys get exactly zero weight. */
#define QB 8
static void attention(const float *qkv, const int64_t *mask, int B, int T, int H, int heads, float *ctx) {
    int d = H / heads, Tp = (T + 15) / 16 * 16;
    float norm = 1.0f / sqrtf((float)d);
    #pragma omp for schedule(static)
    for (int bh = 0; bh < B * heads; bh++) {
        int b = bh / heads, h = bh % heads;
        float kt[d * Tp], probs[QB * Tp], bias[Tp];
        const float *base = qkv + (size_t)b * T * 3 * H;
        for (int j = 0; j < Tp; j++) {
            int real = j < T;
            bias[j] = real && mask[(size_t)b * T + j] ? 0.0f : -INFINITY;
            const float *k = base + (size_t)j * 3 * H + H + h * d;
            for (int e = 0; e < d; e++) kt[e * Tp + j] = real ? k[e] * norm : 0.0f;
        }
        for (int i0 = 0; i0 < T; i0 += QB) {
            const float *q[QB];
            for (int r = 0; r < QB; r++) q[r] = base + (size_t)(i0 + r < T ? i0 + r : T - 1) * 3 * H + h * d;
            /* scores of QB queries, 16 keys at a time */
            for (int j = 0; j < Tp; j += 16) {
                __m512 acc[QB];
                for (int r = 0; r < QB; r++) acc[r] = _mm512_setzero_ps();
                for (int e = 0; e < d; e++) {
                    __m512 kv = _mm512_loadu_ps(kt + e * Tp + j);
                    for (int r = 0; r < QB; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r][e]), kv, acc[r]);
                }
                __m512 bv = _mm512_loadu_ps(bias + j);
                for (int r = 0; r < QB; r++) _mm512_storeu_ps(probs + r * Tp + j, _mm512_add_ps(acc[r], bv));
            }
            /* softmax per query, vectorized; exp(-inf) is exactly zero */
            for (int r = 0; r < QB && i0 + r < T; r++) {
                float *pr = probs + r * Tp;
                __m512 mx = _mm512_set1_ps(-INFINITY);
                for (int j = 0; j < Tp; j += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(pr + j));
                __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();
                for (int j = 0; j < Tp; j += 16) {
                    __m512 v = _mm512_loadu_ps(pr + j);
                    __mmask16 live = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
                    __m512 e = _mm512_maskz_mov_ps(live, exp512(_mm512_sub_ps(v, m)));
                    sum = _mm512_add_ps(sum, e);
                    _mm512_storeu_ps(pr + j, e);
                }
                float total = _mm512_reduce_add_ps(sum); /* 0 only for a message with every key masked */
                __m512 inv = _mm512_set1_ps(total > 0.0f ? 1.0f / total : 0.0f);
                for (int j = 0; j < Tp; j += 16) _mm512_storeu_ps(pr + j, _mm512_mul_ps(_mm512_loadu_ps(pr + j), inv));
            }
            /* context of QB queries, 16 dimensions of the head at a time */
            for (int e = 0; e < d; e += 16) {
                __mmask16 lanes = d - e >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (d - e)) - 1);
                __m512 acc[QB];
                for (int r = 0; r < QB; r++) acc[r] = _mm512_setzero_ps();
                for (int j = 0; j < T; j++) {
                    __m512 v = _mm512_maskz_loadu_ps(lanes, base + (size_t)j * 3 * H + 2 * H + h * d + e);
                    for (int r = 0; r < QB; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(probs[r * Tp + j]), v, acc[r]);
                }
                for (int r = 0; r < QB && i0 + r < T; r++)
                    _mm512_mask_storeu_ps(ctx + ((size_t)b * T + i0 + r) * H + h * d + e, lanes, acc[r]);
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
 * of 16, H a multiple of the number of heads. With `amx` (only after nb_amx_request() succeeded, H and the
 * intermediate size multiples of 64, and the weights regrouped for AMX) the products run on AMX tiles. */
void nb_encode(float *x, const int64_t *mask, int B, int T, int H, int heads, int inter, int n_layers,
               const nb_layer *layers, float eps, int threads, void *workspace, int amx) {
    int R = B * T, rows = (R + TILE - 1) / TILE * TILE, widest = inter > 3 * H ? inter : 3 * H;
    char *cursor = (char *)workspace;
    float *big = (float *)carve(&cursor, (size_t)R * widest * sizeof(float));
    float *ctx = (float *)carve(&cursor, (size_t)R * H * sizeof(float));
    float *tmp = (float *)carve(&cursor, (size_t)R * H * sizeof(float));
    uint8_t *qa = (uint8_t *)carve(&cursor, (size_t)rows * widest);
    float *sa = (float *)carve(&cursor, rows * sizeof(float));
    int32_t *zp = (int32_t *)carve(&cursor, rows * sizeof(int32_t));
    void (*product)(const float *, int, int, int, const int8_t *, const float *, const int32_t *, const float *, int,
                    float *, uint8_t *, float *, int32_t *) = linear;
#if NB_AMX
    if (amx) product = linear_amx;
#else
    amx = 0;
#endif
    #pragma omp parallel num_threads(threads > 0 ? threads : omp_get_num_procs())
    {
#if NB_AMX
        if (amx) amx_configure(); /* the tile configuration is per thread */
#endif
        for (int l = 0; l < n_layers; l++) {
            const nb_layer *L = layers + l;
            product(x, R, H, 3 * H, L->w[0], L->scale[0], L->colsum[0], L->bias[0], 0, big, qa, sa, zp);
            attention(big, mask, B, T, H, heads, ctx);
            product(ctx, R, H, H, L->w[1], L->scale[1], L->colsum[1], L->bias[1], 0, tmp, qa, sa, zp);
            add_layer_norm(x, tmp, R, H, L->ln1_gamma, L->ln1_beta, eps);
            product(x, R, H, inter, L->w[2], L->scale[2], L->colsum[2], L->bias[2], 1, big, qa, sa, zp);
            product(big, R, inter, H, L->w[3], L->scale[3], L->colsum[3], L->bias[3], 0, tmp, qa, sa, zp);
            add_layer_norm(x, tmp, R, H, L->ln2_gamma, L->ln2_beta, eps);
        }
#if NB_AMX
        if (amx) _tile_release(); /* the thread's tile state is no longer saved on context switches */
#endif
    }
}
