/* Dropout on a CPU in one pass (nn/dropout.py), for fp32 and bf16 (stored as uint16) tensors.

   PyTorch's CPU dropout draws a Bernoulli number per element from its generator and keeps the mask: about
   9 ns an element on two cores, a quarter of a training step for the cpu-* presets. Here whether element i
   is kept is a hash of (seed, i): no generator state to step, vectorised, and the backward applies the same
   function to the gradient with the same seed instead of reading a saved mask. */

#include <stdint.h>

#include "bf16.h"

/* A 32-bit integer hash with full avalanche (two multiply-xorshift rounds). */
static inline uint32_t mix(uint32_t h) {
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    return h;
}

/* out[i] = x[i] * scale where mix(mix(i + seed_lo) ^ seed_hi) >= drop_below, else 0, for i < n (n < 2^32):
   an element is dropped with probability drop_below / 2^32. bf16: x and out are bf16, the product is
   formed in fp32 and rounded once. */
void dropout_apply(int64_t n, const void *x, void *out, int bf16, uint32_t drop_below, float scale,
                   uint32_t seed_lo, uint32_t seed_hi, int threads) {
    if (bf16) {
        const uint16_t *restrict in = x;
        uint16_t *restrict o = out;
#pragma omp parallel for simd schedule(static) num_threads(threads)
        for (int64_t i = 0; i < n; i++) {
            int keep = mix(mix((uint32_t)i + seed_lo) ^ seed_hi) >= drop_below;
            o[i] = keep ? to_bf16(from_bf16(in[i]) * scale) : 0;
        }
    } else {
        const float *restrict in = x;
        float *restrict o = out;
#pragma omp parallel for simd schedule(static) num_threads(threads)
        for (int64_t i = 0; i < n; i++) {
            int keep = mix(mix((uint32_t)i + seed_lo) ^ seed_hi) >= drop_below;
            o[i] = keep ? in[i] * scale : 0.0f;
        }
    }
}
