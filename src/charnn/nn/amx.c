/* The recurrent product of charnn's bf16 LSTM layer (nn/cpu_lstm.py) on Intel's AMX matrix units: each time
   step multiplies the state (batch x hidden) by the recurrent weights (4 hidden x hidden), forward and
   backward, 200 such products a training step of the tutorial's model. oneDNN's packed product takes
   310-390 us for one at 64 x 1024 x 4096 on a Xeon with AMX; this one 300-330 us alone, and inside the
   layer's loop, where the step's other work has pushed the weights out of the caches between products,
   the whole training step goes from 189 to 172 ms (docs/benchmarks.md).

   The weights are packed once per layer call into the tiles the units read (16 k-pairs x 16 columns, 1 KB
   each, those of one column block side by side), so that each product streams them once, in order; the
   state is read in place. Each thread takes column blocks; for up to 64 rows of the state at a time it keeps
   four 16 x 16 fp32 sums in tiles while it walks k, and rounds them to bf16 as PyTorch does. Built only
   where the compiler targets a CPU with AMX (-march=native); elsewhere `amx_ready` says no. */

#include <stdint.h>
#include <string.h>

#include "lstm_steps.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023 /* Linux: ask for the AMX tile state (XTILEDATA) in this process */
#define XFEATURE_XTILEDATA 18
#define TILE_ELEMENTS 512 /* bf16 per weight tile: 16 rows of 32 */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} tile_config;

/* 1 where the units can be used in this process (the kernel granted the tile state), else 0. */
int amx_ready(void) {
    static int ready = -1;
    if (ready < 0)
        ready = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return ready;
}

/* Eight tiles of 16 rows of 64 bytes: four sums, one of weights, three of the state. */
static void configure_tiles(void) {
    tile_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) {
        config.rows[t] = 16;
        config.bytes_per_row[t] = 64;
    }
    _tile_loadconfig(&config);
}

/* packed = the tiles of w.t() (as the product's right side, k x n), from w (n x k) or, `transposed`,
   from w (k x n); n % 16 == 0, k % 32 == 0. Tile (j, kt) holds element [k, column] at row (k % 32) / 2,
   column * 2 + k % 2: pairs of k side by side, as the units' bf16 dot products take them. */
void amx_pack(int64_t n, int64_t k, const uint16_t *restrict w, int transposed, uint16_t *restrict packed,
              int threads) {
    int64_t k_tiles = k / 32;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t j = 0; j < n / 16; j++)
        for (int64_t kt = 0; kt < k_tiles; kt++) {
            uint16_t *tile = packed + (j * k_tiles + kt) * TILE_ELEMENTS;
            for (int64_t kk = 0; kk < 32; kk++)
                for (int64_t c = 0; c < 16; c++) {
                    int64_t row = kt * 32 + kk, column = j * 16 + c;
                    tile[(kk / 2) * 32 + c * 2 + kk % 2] = transposed ? w[row * n + column] : w[column * k + row];
                }
        }
}

/* The sums in tile `t` (0-3), rounded to bf16, into 16 rows of `out`, `n` elements apart. */
static void store_sums(int t, uint16_t *out, int64_t n) {
    float sums[16 * 16] __attribute__((aligned(64)));
    switch (t) { /* a tile's number is part of the instruction */
    case 0: _tile_stored(0, sums, 64); break;
    case 1: _tile_stored(1, sums, 64); break;
    case 2: _tile_stored(2, sums, 64); break;
    default: _tile_stored(3, sums, 64); break;
    }
    for (int r = 0; r < 16; r++)
        _mm256_storeu_si256((__m256i *)(out + r * n), (__m256i)_mm512_cvtneps_pbh(_mm512_load_ps(sums + r * 16)));
}

/* out (m x n, bf16) = a (m x k, bf16, contiguous) @ the matrix `packed` holds (amx_pack); m % 16 == 0. */
void amx_product(int64_t m, int64_t n, int64_t k, const uint16_t *a, const uint16_t *packed, uint16_t *out,
                 int threads) {
    int64_t k_tiles = k / 32, stride = k * 2;
#pragma omp parallel num_threads(threads)
    {
        configure_tiles();
#pragma omp for schedule(static)
        for (int64_t j = 0; j < n / 16; j++) {
            const uint16_t *b = packed + j * k_tiles * TILE_ELEMENTS;
            for (int64_t m0 = 0; m0 < m; m0 += 64) {
                int64_t blocks = (m - m0) / 16 < 4 ? (m - m0) / 16 : 4;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                const uint16_t *rows = a + m0 * k;
                for (int64_t kt = 0; kt < k_tiles; kt++) {
                    const uint16_t *at = rows + kt * 32;
                    _tile_loadd(4, b + kt * TILE_ELEMENTS, 64);
                    _tile_loadd(5, at, stride);
                    _tile_dpbf16ps(0, 5, 4);
                    if (blocks > 1) {
                        _tile_loadd(6, at + 16 * k, stride);
                        _tile_dpbf16ps(1, 6, 4);
                    }
                    if (blocks > 2) {
                        _tile_loadd(7, at + 32 * k, stride);
                        _tile_dpbf16ps(2, 7, 4);
                    }
                    if (blocks > 3) {
                        _tile_loadd(5, at + 48 * k, stride);
                        _tile_dpbf16ps(3, 5, 4);
                    }
                }
                for (int t = 0; t < blocks; t++)
                    store_sums(t, out + (m0 + t * 16) * n + j * 16, n);
            }
        }
        _tile_release();
    }
}

/* The layer's forward loop (cpu_lstm.LSTMLayer) with its products here: `steps` time steps of
   lstm_forward_step, each after the product of the step's input state with the packed recurrent weights
   (into `recurrent`, batch x 4 hidden). x_part: a row per (step, batch row), or where ids (steps x batch) is
   given a table; h_before (hidden x steps * batch): columns [0, batch) hold h0 transposed already. */
void lstm_forward_loop(int64_t steps, int64_t batch, int64_t hidden, float *gates, const uint16_t *x_part,
                       const int64_t *ids, const float *bias, const uint16_t *packed, const uint16_t *h0,
                       const float *c0, float *cells, float *tanh_cells, uint16_t *out, uint16_t *h_before,
                       uint16_t *recurrent, int threads) {
    const uint16_t *h = h0;
    const float *c = c0;
    for (int64_t t = 0; t < steps; t++) {
        amx_product(batch, 4 * hidden, hidden, h, packed, recurrent, threads);
        int64_t at = t * batch * hidden;
        lstm_forward_step(batch, hidden, gates + 4 * at, ids ? x_part : x_part + 4 * at, ids ? ids + t * batch : 0,
                          bias, recurrent, c, cells + at, tanh_cells + at, out + at,
                          t + 1 < steps ? h_before + (t + 1) * batch : 0, steps * batch, threads);
        h = out + at;
        c = cells + at;
    }
}

/* The backward loop likewise: lstm_backward_step from the last step to the first, each followed by the
   product of its dz with the packed recurrent weights into dh_next (batch x hidden), which holds the last
   step's output gradient from later steps at the start and the first's input state's at the end. */
void lstm_backward_loop(int64_t steps, int64_t batch, int64_t hidden, const float *gates, const float *cells,
                        const float *c0, const float *tanh_cells, const uint16_t *d_out, uint16_t *dh_next,
                        float *dc, uint16_t *dz, float *sums, int64_t rows, const int64_t *ids,
                        const uint16_t *packed, int threads) {
    for (int64_t t = steps - 1; t >= 0; t--) {
        int64_t at = t * batch * hidden;
        lstm_backward_step(batch, hidden, gates + 4 * at, t ? cells + at - batch * hidden : c0, tanh_cells + at,
                           d_out + at, dh_next, dc, dz + 4 * at, sums, rows, ids ? ids + t * batch : 0, threads);
        amx_product(batch, hidden, 4 * hidden, dz + 4 * at, packed, dh_next, threads);
    }
}

#else

int amx_ready(void) { return 0; }

void amx_pack(int64_t n, int64_t k, const uint16_t *w, int transposed, uint16_t *packed, int threads) {}

void amx_product(int64_t m, int64_t n, int64_t k, const uint16_t *a, const uint16_t *packed, uint16_t *out,
                 int threads) {}

void lstm_forward_loop(int64_t steps, int64_t batch, int64_t hidden, float *gates, const uint16_t *x_part,
                       const int64_t *ids, const float *bias, const uint16_t *packed, const uint16_t *h0,
                       const float *c0, float *cells, float *tanh_cells, uint16_t *out, uint16_t *h_before,
                       uint16_t *recurrent, int threads) {}

void lstm_backward_loop(int64_t steps, int64_t batch, int64_t hidden, const float *gates, const float *cells,
                        const float *c0, const float *tanh_cells, const uint16_t *d_out, uint16_t *dh_next,
                        float *dc, uint16_t *dz, float *sums, int64_t rows, const int64_t *ids,
                        const uint16_t *packed, int threads) {}

#endif
