// Element-wise kernels of the Llama block in AVX2/FMA, for CPUs that have them (ck_has_avx2_fma). Each matches a
// portable Swift kernel in Llama's Kernels.swift (same algorithm, same argument order); Kernels dispatches.
// Shapes: rows × width, row-major, unaligned pointers allowed.
#ifndef CKERNELS_H
#define CKERNELS_H

/// 1 when the CPU supports AVX2 and FMA (the kernels below may only be called then), else 0.
int ck_has_avx2_fma(void);

/// x[i] = e^x[i] in place (the exponential the kernels below use; exposed for tests against libm).
void ck_exp(float *x, long n);

/// out[rows, f] = silu(gate) * up, with gate_up [rows, 2f] (gate in the first f columns).
void ck_swiglu_forward(float *out, const float *gate_up, long rows, long f);

/// out[rows, d] = x / sqrt(mean(x^2) + eps) * w; rstd[rows] = 1 / sqrt(mean(x^2) + eps) unless rstd is NULL.
void ck_rmsnorm_forward(float *out, const float *x, const float *w, long rows, long d, float eps, float *rstd);

/// In-place softmax of row[0, valid); row[valid, count) is set to 0.
void ck_softmax_row(float *row, long count, long valid);

/// log(sum(exp(x[i]))) over n values (partial sums in float per 512 values, totals in double).
float ck_log_sum_exp(const float *x, long n);

/// Causal attention of one head for a short sequence (see Kernels.attentionSmall).
void ck_attention_small(float *scores, float *z, const float *q, long q_stride, const float *k, const float *v,
                        long kv_stride, long rows, long keys, long first_position, long head_dim, float scale);

#endif
