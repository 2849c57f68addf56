/* The training layer's time steps (lstm_steps.c), as amx.c's loops call them. */

#pragma once

#include <stdint.h>

void lstm_forward_step(int64_t batch, int64_t hidden, float *restrict gates,
                       const uint16_t *restrict x_part, const int64_t *restrict ids, const float *restrict bias,
                       const uint16_t *restrict recurrent, const float *restrict c_prev,
                       float *restrict cell, float *restrict tanh_cell, uint16_t *restrict h,
                       uint16_t *restrict h_t, int64_t h_t_stride, int threads);

void lstm_backward_step(int64_t batch, int64_t hidden, const float *restrict gates,
                        const float *restrict c_prev, const float *restrict tanh_cell,
                        const uint16_t *restrict d_out, const uint16_t *restrict dh_next, float *restrict dc,
                        uint16_t *restrict dz, float *restrict sums, int64_t rows, const int64_t *restrict ids,
                        int threads);
