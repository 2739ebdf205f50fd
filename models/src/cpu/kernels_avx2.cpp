// The kernels of kernels_impl.h for AVX2 + FMA (compiled with -march=x86-64-v3; chosen at
// run time only on CPUs that support it). 16 ymm registers: 2×4, 6×2, 8×1 tiles.
#define PICO_ISA avx2
#define PICO_ISA_NAME "avx2"
#define PICO_TABLE_NAME kTableAvx2
#define PICO_VEC_BYTES 32
#define PICO_TILE_MR4 2
#define PICO_TILE_MR2 6
#define PICO_TILE_MR1 8
#include "cpu/kernels_impl.h"
