/* One time step of charnn's bf16 LSTM layer on a CPU (nn/cpu_lstm.py), its pointwise work in one pass; and
   one step of generation with bf16 weights (nn/stepper.py), likewise, for an LSTM and for a GRU (whose
   gates are in PyTorch's order r, z, n).

   The matrix products stay in PyTorch; between two of them the layer's Python loop ran ten to twenty small
   tensor operations a step, each reading and writing the step's gates again. Here each step is one loop over
   the batch rows: fp32 arithmetic, bf16 (stored as uint16) where the layer's tensors are bf16, an LSTM's
   gates in PyTorch's order i, f, g, o. Compiled on first use for the machine it runs on (nn/native.py). */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"
#include "lstm_steps.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* exp(x) for x in [-87, 87] (clamped there) within 2 ulp, without a call, so loops of it vectorise: x = n ln 2 + r
   with |r| <= ln 2 / 2, a degree-6 polynomial for exp(r), 2^n put in the exponent bits. */
static inline float exp_(float x) {
    x = x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x);
    float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* rounded to an integer: 1.5 x 2^23 */
    float r = x - n * 0.693145752f - n * 1.42860677e-6f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666716f + r * (0.00833333377f +
                                                                                         r * 0.00138888892f)))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_(-x)); }

static inline float tanh_(float x) { return 2.0f * sigmoid(2.0f * x) - 1.0f; }

/* Writes the activated gates (g as tanh) to gates (batch, 4, hidden), from the pre-activations' input part
   x_part (bf16, a row of 4 hidden per batch row, or where ids is given, a table whose row ids[b] is batch
   row b's), the bias (4 hidden) and the recurrent part (bf16, batch x 4 hidden); the
   cell and its tanh (batch, hidden); the output h (bf16, batch x hidden); and, where h_t is given, h
   transposed into columns [0, batch) of h_t, whose rows are h_t_stride apart. */
void lstm_forward_step(int64_t batch, int64_t hidden, float *restrict gates,
                       const uint16_t *restrict x_part, const int64_t *restrict ids, const float *restrict bias,
                       const uint16_t *restrict recurrent, const float *restrict c_prev,
                       float *restrict cell, float *restrict tanh_cell, uint16_t *restrict h,
                       uint16_t *restrict h_t, int64_t h_t_stride, int threads) {
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            float *restrict ai = gates + b * 4 * hidden, *restrict af = ai + hidden;
            float *restrict ag = af + hidden, *restrict ao = ag + hidden;
            const uint16_t *restrict ri = recurrent + b * 4 * hidden, *restrict rf = ri + hidden;
            const uint16_t *restrict rg = rf + hidden, *restrict ro = rg + hidden;
            const uint16_t *restrict xi = x_part + (ids ? ids[b] : b) * 4 * hidden, *restrict xf = xi + hidden;
            const uint16_t *restrict xg = xf + hidden, *restrict xo = xg + hidden;
            const float *restrict bi = bias, *restrict bf = bi + hidden, *restrict bg = bf + hidden;
            const float *restrict bo = bg + hidden;
            const float *restrict cp = c_prev + b * hidden;
            float *restrict cl = cell + b * hidden, *restrict tc = tanh_cell + b * hidden;
            uint16_t *restrict hb = h + b * hidden;
#pragma omp simd
            for (int64_t j = 0; j < hidden; j++) {
                float i = sigmoid(from_bf16(xi[j]) + bi[j] + from_bf16(ri[j]));
                float f = sigmoid(from_bf16(xf[j]) + bf[j] + from_bf16(rf[j]));
                float g = tanh_(from_bf16(xg[j]) + bg[j] + from_bf16(rg[j]));
                float o = sigmoid(from_bf16(xo[j]) + bo[j] + from_bf16(ro[j]));
                ai[j] = i;
                af[j] = f;
                ag[j] = g;
                ao[j] = o;
                float c = i * g + f * cp[j];
                float t = tanh_(c);
                cl[j] = c;
                tc[j] = t;
                hb[j] = to_bf16(o * t);
            }
        }
        if (h_t) {
#pragma omp for schedule(static)
            for (int64_t j = 0; j < hidden; j++)
                for (int64_t b = 0; b < batch; b++) h_t[j * h_t_stride + b] = h[b * hidden + j];
        }
    }
}

/* The step's gradients. gates: the activated gates (batch, 4, hidden); c_prev, tanh_cell: the cell before the
   step and the tanh of the cell after; d_out, dh_next (bf16, batch x hidden): the gradient of the step's output
   from above and from the next step. dc: in, the cell's gradient from the next step; out, the gradient of the
   cell before this step. Writes the pre-activations' gradient dz (bf16, batch x 4 hidden) and adds it, summed
   over the batch rows each thread takes, to that thread's block of sums (threads x rows x 4 hidden): to its
   row ids[b] where ids is given (the gradient of a table of input parts, x_part in the forward), else to its
   only row (the bias's gradient). The threads' sums do not race, and they are the same on every run. */
void lstm_backward_step(int64_t batch, int64_t hidden, const float *restrict gates,
                        const float *restrict c_prev, const float *restrict tanh_cell,
                        const uint16_t *restrict d_out, const uint16_t *restrict dh_next, float *restrict dc,
                        uint16_t *restrict dz, float *restrict sums, int64_t rows, const int64_t *restrict ids,
                        int threads) {
#pragma omp parallel num_threads(threads)
    {
        int64_t part = 0;
#ifdef _OPENMP
        part = omp_get_thread_num();
#endif
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            float *restrict sum_i = sums + (part * rows + (ids ? ids[b] : 0)) * 4 * hidden;
            float *restrict sum_f = sum_i + hidden, *restrict sum_g = sum_f + hidden, *restrict sum_o = sum_g + hidden;
            const float *restrict a = gates + b * 4 * hidden;
            uint16_t *restrict z = dz + b * 4 * hidden;
            const int64_t row = b * hidden;
#pragma omp simd
            for (int64_t j = 0; j < hidden; j++) {
                float i = a[j], f = a[hidden + j], g = a[2 * hidden + j], o = a[3 * hidden + j];
                float t = tanh_cell[row + j];
                float dh = from_bf16(d_out[row + j]) + from_bf16(dh_next[row + j]);
                float d_cell = dc[row + j] + dh * o * (1.0f - t * t);
                uint16_t zi = to_bf16(d_cell * g * i * (1.0f - i));
                uint16_t zf = to_bf16(d_cell * c_prev[row + j] * f * (1.0f - f));
                uint16_t zg = to_bf16(d_cell * i * (1.0f - g * g));
                uint16_t zo = to_bf16(dh * t * o * (1.0f - o));
                z[j] = zi;
                z[hidden + j] = zf;
                z[2 * hidden + j] = zg;
                z[3 * hidden + j] = zo;
                sum_i[j] += from_bf16(zi);
                sum_f[j] += from_bf16(zf);
                sum_g[j] += from_bf16(zg);
                sum_o[j] += from_bf16(zo);
                dc[row + j] = d_cell * f;
            }
        }
    }
}

/* One step of an LSTM layer for generation (nn/stepper.py), fp32: the gates' pre-activations are the input
   part (x_part, fp32 with the biases in: row ids[b] of a table where ids is given, else row b) plus the
   recurrent part (bf16, batch x 4 hidden); writes the new cell c (fp32) from c_prev, and the output h (fp32),
   both batch x hidden. */
void lstm_generate_step(int64_t batch, int64_t hidden, const float *restrict x_part,
                        const int64_t *restrict ids, const uint16_t *restrict recurrent,
                        const float *restrict c_prev, float *restrict c, float *restrict h, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (batch > 1)
    for (int64_t b = 0; b < batch; b++) {
        const float *restrict xi = x_part + (ids ? ids[b] : b) * 4 * hidden, *restrict xf = xi + hidden;
        const float *restrict xg = xf + hidden, *restrict xo = xg + hidden;
        const uint16_t *restrict ri = recurrent + b * 4 * hidden, *restrict rf = ri + hidden;
        const uint16_t *restrict rg = rf + hidden, *restrict ro = rg + hidden;
        const float *restrict cp = c_prev + b * hidden;
        float *restrict cl = c + b * hidden, *restrict hb = h + b * hidden;
#pragma omp simd
        for (int64_t j = 0; j < hidden; j++) {
            float i = sigmoid(xi[j] + from_bf16(ri[j]));
            float f = sigmoid(xf[j] + from_bf16(rf[j]));
            float g = tanh_(xg[j] + from_bf16(rg[j]));
            float o = sigmoid(xo[j] + from_bf16(ro[j]));
            float cell = i * g + f * cp[j];
            cl[j] = cell;
            hb[j] = o * tanh_(cell);
        }
    }
}

/* One GRU step for generation with bf16 weights, as nn/stepper.py's PyTorch operations do it (gates r, z, n):
   from the input part (fp32, the input biases in: row ids[b] of a table where ids is given, else row b), the
   recurrent part (bf16, batch x 3 hidden), the recurrent biases (fp32, 3 hidden, added to that part, where the
   reset gate then scales n's) and the state before (fp32), writes the new state h (fp32, batch x hidden). */
void gru_generate_step(int64_t batch, int64_t hidden, const float *restrict x_part,
                       const int64_t *restrict ids, const uint16_t *restrict recurrent,
                       const float *restrict bias, const float *restrict h_prev, float *restrict h,
                       int threads) {
    const float *restrict br = bias, *restrict bz = bias + hidden, *restrict bn = bias + 2 * hidden;
#pragma omp parallel for schedule(static) num_threads(threads) if (batch > 1)
    for (int64_t b = 0; b < batch; b++) {
        const float *restrict xr = x_part + (ids ? ids[b] : b) * 3 * hidden, *restrict xz = xr + hidden;
        const float *restrict xn = xz + hidden;
        const uint16_t *restrict rr = recurrent + b * 3 * hidden, *restrict rz = rr + hidden;
        const uint16_t *restrict rn = rz + hidden;
        const float *restrict hp = h_prev + b * hidden;
        float *restrict hb = h + b * hidden;
#pragma omp simd
        for (int64_t j = 0; j < hidden; j++) {
            float r = sigmoid(xr[j] + (from_bf16(rr[j]) + br[j]));
            float z = sigmoid(xz[j] + (from_bf16(rz[j]) + bz[j]));
            float n = tanh_(xn[j] + r * (from_bf16(rn[j]) + bn[j]));
            hb[j] = n + z * (hp[j] - n);
        }
    }
}
