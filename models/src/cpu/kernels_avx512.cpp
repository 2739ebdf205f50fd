// The kernels of kernels_impl.h for AVX-512 (compiled with -march=x86-64-v4; chosen at run
// time only on CPUs and OSes that support it). 32 zmm registers: 6×4, 12×2, 16×1 tiles.
#define PICO_ISA avx512
#define PICO_ISA_NAME "avx512"
#define PICO_TABLE_NAME kTableAvx512
#define PICO_VEC_BYTES 64
#define PICO_TILE_MR4 6
#define PICO_TILE_MR2 12
#define PICO_TILE_MR1 16
#include "cpu/kernels_impl.h"
