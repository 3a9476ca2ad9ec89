// AVX2/FMA versions of Llama's element-wise kernels. Every function carries its own target attribute, so the rest
// of the program stays plain x86-64; callers check ck_has_avx2_fma() first.
#include "ckernels.h"

#if !defined(__x86_64__)
// Other CPUs: no AVX2; Kernels keeps to its portable Swift versions and never calls the functions below.
#include <stdlib.h>
int ck_has_avx2_fma(void) { return 0; }
void ck_exp(float *x, long n) { abort(); }
void ck_swiglu_forward(float *out, const float *gate_up, long rows, long f) { abort(); }
void ck_rmsnorm_forward(float *out, const float *x, const float *w, long rows, long d, float eps, float *rstd) { abort(); }
void ck_softmax_row(float *row, long count, long valid) { abort(); }
float ck_log_sum_exp(const float *x, long n) { abort(); }
void ck_attention_small(float *scores, float *z, const float *q, long q_stride, const float *k, const float *v,
                        long kv_stride, long rows, long keys, long first_position, long head_dim, float scale) { abort(); }
#else

#include <immintrin.h>
#include <math.h>

#define CK_AVX2 __attribute__((target("avx2,fma")))

int ck_has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// e^x in 8 lanes, the algorithm of Kernels.exp8: x = n ln2 + r (n rounded through the 1.5 * 2^23 trick, ln2 in two
// parts), e^r by the degree-6 Cephes polynomial, 2^n built in the exponent bits; inputs clamped to [-87, 88]
// (NaN stays NaN: max/min return their second operand when one is NaN).
CK_AVX2 static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    __m256 m = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504f), magic);
    __m256 n = _mm256_sub_ps(m, magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_sub_epi32(_mm256_castps_si256(m), _mm256_set1_epi32(0x4B400000 - 127));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}

CK_AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

CK_AVX2 static inline float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

CK_AVX2 static inline float dot(const float *a, const float *b, long n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    float s = hsum8(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

CK_AVX2 void ck_exp(float *x, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float tail[8] = {0};
        for (long j = i; j < n; j++) tail[j - i] = x[j];
        _mm256_storeu_ps(tail, exp8(_mm256_loadu_ps(tail)));
        for (long j = i; j < n; j++) x[j] = tail[j - i];
    }
}

CK_AVX2 void ck_swiglu_forward(float *out, const float *gate_up, long rows, long f) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (long r = 0; r < rows; r++) {
        const float *g = gate_up + r * 2 * f, *u = g + f;
        float *o = out + r * f;
        long i = 0;
        for (; i + 8 <= f; i += 8) {
            __m256 x = _mm256_loadu_ps(g + i);
            __m256 sig = _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, x))));
            _mm256_storeu_ps(o + i, _mm256_mul_ps(sig, _mm256_loadu_ps(u + i)));
        }
        for (; i < f; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

CK_AVX2 void ck_rmsnorm_forward(float *out, const float *x, const float *w, long rows, long d, float eps, float *rstd) {
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        float *o = out + r * d;
        float ss = dot(xr, xr, d);
        float s = 1.0f / sqrtf(ss / (float)d + eps);
        if (rstd) rstd[r] = s;
        const __m256 sv = _mm256_set1_ps(s);
        long i = 0;
        for (; i + 8 <= d; i += 8)
            _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), sv), _mm256_loadu_ps(w + i)));
        for (; i < d; i++) o[i] = xr[i] * s * w[i];
    }
}

CK_AVX2 void ck_softmax_row(float *row, long count, long valid) {
    float m = -INFINITY;
    for (long j = 0; j < valid; j++) if (row[j] > m) m = row[j];
    const __m256 mv = _mm256_set1_ps(m);
    __m256 acc = _mm256_setzero_ps();
    long j = 0;
    for (; j + 8 <= valid; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), mv));
        _mm256_storeu_ps(row + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    float s = hsum8(acc);
    for (; j < valid; j++) { float e = expf(row[j] - m); row[j] = e; s += e; }
    float inv = 1.0f / s;
    for (j = 0; j < valid; j++) row[j] *= inv;
    for (j = valid; j < count; j++) row[j] = 0.0f;
}

CK_AVX2 float ck_log_sum_exp(const float *x, long n) {
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    long j = 0;
    for (; j + 8 <= n; j += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + j));
    float m = hmax8(m8);
    for (; j < n; j++) if (x[j] > m) m = x[j];
    const __m256 mv = _mm256_set1_ps(m);
    double s = 0;
    long i = 0;
    while (i + 8 <= n) {
        // Blocks of at most 512 values keep the float partial sums exact to ~1e-7.
        __m256 acc = _mm256_setzero_ps();
        long end = i + 512 < n ? i + 512 : n;
        for (; i + 8 <= end; i += 8) acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv)));
        s += (double)hsum8(acc);
    }
    for (; i < n; i++) s += (double)expf(x[i] - m);
    return m + (float)log(s);
}

CK_AVX2 void ck_attention_small(float *scores, float *z, const float *q, long q_stride, const float *k, const float *v,
                                long kv_stride, long rows, long keys, long first_position, long head_dim, float scale) {
    for (long i = 0; i < rows; i++) {
        const float *qi = q + i * q_stride;
        float *si = scores + i * keys, *zi = z + i * q_stride;
        long valid = first_position + i + 1;
        for (long j = 0; j < valid; j++) si[j] = dot(qi, k + j * kv_stride, head_dim) * scale;
        ck_softmax_row(si, keys, valid);
        long e = 0;
        for (; e + 8 <= head_dim; e += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (long j = 0; j < valid; j++)
                acc = _mm256_fmadd_ps(_mm256_set1_ps(si[j]), _mm256_loadu_ps(v + j * kv_stride + e), acc);
            _mm256_storeu_ps(zi + e, acc);
        }
        for (; e < head_dim; e++) {
            float acc = 0;
            for (long j = 0; j < valid; j++) acc += si[j] * v[j * kv_stride + e];
            zi[e] = acc;
        }
    }
}

#endif
