/* The product of int8 weights (one scale per output row) with a few rows of activations, for generation a
   character at a time (nn/stepper.py), where it reads 4 MB of weights per step for the tutorial's model.

   Each activation row is scaled to 16-bit integers (its largest magnitude to 32767), so the products are
   integer multiply-adds summed exactly in integers, in any order: the results are the same bit for bit on
   every CPU and thread count. Two instructions (the weights widened to 16 bits, then AVX-512 VNNI's
   vpdpwssd) do 32 multiply-adds where the float route (widen, convert, multiply-add) takes three per 16.
   Compiled on first use for the machine it runs on (nn/native.py). */

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "bf16.h"
#ifdef __AVX512VNNI__
#include <immintrin.h>
#endif

#define X_SCALE 32767.0
/* |weight x activation| <= 127 x 32767, so an int32 sum of 512 of them cannot overflow; longer rows are
   summed 512 at a time into 64 bits */
#define CHUNK 512

static int64_t dot(const int8_t *restrict w, const int16_t *restrict x, int64_t n) {
    int64_t total = 0, k = 0;
#ifdef __AVX512VNNI__
    __m512i wide = _mm512_setzero_si512();
    for (; k + 32 <= n;) {
        __m512i acc = _mm512_setzero_si512();
        int64_t end = k + CHUNK < n ? k + CHUNK : n;
        for (; k + 32 <= end; k += 32) {
            __m512i wk = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + k)));
            acc = _mm512_dpwssd_epi32(acc, wk, _mm512_loadu_si512((const void *)(x + k)));
        }
        wide = _mm512_add_epi64(wide, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc)));
        wide = _mm512_add_epi64(wide, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1)));
    }
    total = _mm512_reduce_add_epi64(wide);
#endif
    for (int64_t end = k; k < n; k = end) {
        end = k + CHUNK < n ? k + CHUNK : n;
        int32_t acc = 0;
        for (int64_t j = k; j < end; j++) acc += (int32_t)w[j] * (int32_t)x[j];
        total += acc;
    }
    return total;
}

/* y (rows, out; bf16) = x (rows, in; fp32) times the transpose of q (out, in; int8) with scales (out; fp32),
   using xq (rows, in; int16) and x_scales (rows; double) as scratch. A row of x that holds a NaN or an
   infinity gives NaN throughout its row of y. */
void int8_product(int64_t rows, int64_t in, int64_t out, const float *restrict x, const int8_t *restrict q,
                  const float *restrict scales, int16_t *restrict xq, double *restrict x_scales,
                  uint16_t *restrict y, int threads) {
    for (int64_t r = 0; r < rows; r++) {
        const float *restrict xr = x + r * in;
        float largest = 0.0f;
        int finite = 1;
        for (int64_t k = 0; k < in; k++) {
            float a = fabsf(xr[k]);
            finite &= a <= FLT_MAX; /* false for a NaN too */
            largest = a > largest ? a : largest;
        }
        /* in double, where 32767 / largest stays finite for every positive float; rounded to the nearest
           integer, ties to even (nearbyint: one instruction where the CPU has SSE4.1) */
        double inverse = largest > 0.0f && finite ? X_SCALE / (double)largest : 0.0;
        for (int64_t k = 0; k < in; k++) xq[r * in + k] = finite ? (int16_t)nearbyint((double)xr[k] * inverse) : 0;
        x_scales[r] = finite ? (double)largest / X_SCALE : NAN;
    }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t m = 0; m < out; m++) {
        const int8_t *restrict w = q + m * in;
        for (int64_t r = 0; r < rows; r++) {
            double sum = (double)dot(w, xq + r * in, in);
            y[r * out + m] = to_bf16((float)(sum * x_scales[r] * (double)scales[m]));
        }
    }
}
