// The kernels of kernels_impl.h for the build's baseline instruction set (SSE2 on x86-64,
// NEON on arm64): 16-byte vectors, 2×4, 6×2, 8×1 tiles.
#define PICO_ISA generic
#define PICO_ISA_NAME "generic"
#define PICO_TABLE_NAME kTableGeneric
#define PICO_VEC_BYTES 16
#define PICO_TILE_MR4 2
#define PICO_TILE_MR2 6
#define PICO_TILE_MR1 8
#include "cpu/kernels_impl.h"
