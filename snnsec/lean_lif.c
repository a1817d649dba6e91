/* spikingjelly's multi-step LIF (reference implementation, detach_reset), forward and backward through
 * time, one pass over memory per step instead of a dozen tensor operations. Each value is computed by
 * the same IEEE single-precision operations, in the same order, as the tensor operations of
 * snnsec/lean_kernels.py (lif_steps and _LIFGraph.backward), so results are bitwise equal: keep it
 * compiled without fast-math and with -ffp-contract=off (a fused multiply-add rounds once, not twice).
 * Elements are independent, so a caller may split [0, n) into ranges [lo, hi) run side by side.
 * Tensors are contiguous float32 [T, n]; the membrane v [n] is updated in place. */
#include <stdint.h>
#include <stddef.h>

void snnsec_lif_forward(const float *x, float *v, float *spikes, float *h_seq, float *v_seq, int64_t T, int64_t n,
                        int64_t lo, int64_t hi, float tau, int decay_input, float v_threshold, int hard_reset,
                        float v_reset) {
    const float r = hard_reset ? v_reset : 0.0f;
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * n;
        float *st = spikes + t * n;
        float *ht = h_seq ? h_seq + t * n : NULL;
        float *vt = v_seq ? v_seq + t * n : NULL;
        for (int64_t i = lo; i < hi; i++) {
            const float vi = v[i];
            float tmp = vi - r;
            float h;
            if (decay_input) { /* v + (x - (v - r)) / tau */
                h = xt[i] - tmp;
                h = h / tau;
                h = h + vi;
            } else { /* v - (v - r) / tau + x */
                tmp = tmp / tau;
                h = vi - tmp;
                h = h + xt[i];
            }
            const float s = (h - v_threshold) >= 0.0f ? 1.0f : 0.0f;
            float nv;
            if (hard_reset) { /* s * v_reset + (1 - s) * h, 1 - s as (-s) + 1 */
                const float a = s * v_reset;
                const float b = (-s + 1.0f) * h;
                nv = a + b;
            } else { /* h - s * v_threshold */
                nv = h - s * v_threshold;
            }
            st[i] = s;
            v[i] = nv;
            if (ht) ht[i] = h;
            if (vt) vt[i] = nv;
        }
    }
}

/* One step of the backward over [lo, hi), the flags constant at each call below so that the compiler
 * drops the branches and vectorises. */
static inline __attribute__((always_inline)) void backward_step(
    const float *restrict g_s, const float *restrict sg, const float *restrict h, const float *restrict s,
    float *restrict g_x, float *restrict carry, int64_t lo, int64_t hi, float tau, float v_threshold,
    float atan_scale, float atan_half_alpha, const int with_g_s, const int with_carry, const int atan,
    const int hard_reset, const int decay_input) {
    for (int64_t i = lo; i < hi; i++) {
        float g_h;
        if (with_g_s) {
            float d;
            if (atan) {
                const float z = (h[i] - v_threshold) * atan_scale;
                d = (1.0f / (z * z + 1.0f)) * atan_half_alpha;
            } else {
                d = sg[i];
            }
            g_h = g_s[i] * d;
            if (with_carry) g_h = g_h + (hard_reset ? carry[i] * (1.0f - s[i]) : carry[i]);
        } else {
            g_h = hard_reset ? carry[i] * (1.0f - s[i]) : carry[i];
        }
        if (decay_input) { /* g_x = g_h / tau; g_v = g_h - g_x */
            const float gx = g_h / tau;
            g_x[i] = gx;
            carry[i] = g_h - gx;
        } else { /* g_x = g_h; g_v = g_h + (-g_h) / tau */
            g_x[i] = g_h;
            carry[i] = g_h + (-g_h) / tau;
        }
    }
}

#define STEP(GS, C, A, H, D)                                                                                   \
    backward_step(g_s ? g_s + o : NULL, sg ? sg + o : NULL, h_seq + o, spikes + o, g_x + o, carry, lo, hi, tau,  \
                  v_threshold, atan_scale, atan_half_alpha, GS, C, A, H, D)
#define BY_DECAY(GS, C, A, H) do { if (decay_input) STEP(GS, C, A, H, 1); else STEP(GS, C, A, H, 0); } while (0)
#define BY_HARD(GS, C, A) do { if (hard_reset) BY_DECAY(GS, C, A, 1); else BY_DECAY(GS, C, A, 0); } while (0)
#define BY_ATAN(GS, C) do { if (atan) BY_HARD(GS, C, 1); else BY_HARD(GS, C, 0); } while (0)

/* g_x from the incoming gradients of the spikes (g_s, or NULL) and of the final membrane (g_v, or NULL).
 * The surrogate's derivative at h - v_threshold is either given per step (sg, computed by the caller with
 * spikingjelly's own formula) or, for ATan, computed here as torch does: z = x * (pi / 2 * alpha),
 * (1 / (z * z + 1)) * (alpha / 2) (a scalar divided by a tensor is a reciprocal times the scalar).
 * carry [n] is scratch. */
void snnsec_lif_backward(const float *g_s, const float *sg, const float *h_seq, const float *spikes, const float *g_v,
                         float *g_x, float *carry, int64_t T, int64_t n, int64_t lo, int64_t hi, float tau,
                         int decay_input, int hard_reset, float v_threshold, int atan, float atan_scale,
                         float atan_half_alpha) {
    int has_carry = g_v != NULL;
    if (has_carry)
        for (int64_t i = lo; i < hi; i++) carry[i] = g_v[i];
    for (int64_t t = T - 1; t >= 0; t--) {
        const int64_t o = t * n;
        if (g_s == NULL && !has_carry) {
            for (int64_t i = lo; i < hi; i++) g_x[o + i] = 0.0f;
            continue;
        }
        if (g_s != NULL && has_carry) BY_ATAN(1, 1);
        else if (g_s != NULL) BY_ATAN(1, 0);
        else BY_HARD(0, 1, 0);
        has_carry = 1;
    }
}
