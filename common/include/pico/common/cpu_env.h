// pico/common/cpu_env.h — the process environment that makes CPU training fast.
//
// LibTorch's OpenMP threads and OpenBLAS's pthreads share the cores, and both libraries
// read their settings from environment variables when they are loaded, before main().
// ensure_cpu_environment() computes the settings pico wants, and if the environment
// lacks them, sets them and re-executes the binary once (measured in
// experiments/inner_throughput/RESULTS.md):
//   OMP_WAIT_POLICY=passive   idle OpenMP threads sleep instead of spinning and stealing
//                             the cores OpenBLAS is about to use (3x on 2 cores).
//   OPENBLAS_CORETYPE         raised to SkylakeX when the CPU and OS support AVX-512 but
//                             the variable names an AVX2-or-older core (e.g. Haswell, set by
//                             some environments for CPUs OpenBLAS 0.3.21 does not know, such
//                             as AMD Zen 5): the AVX-512 sgemm kernels are ~2x faster.
// It changes no variable when PICO_CPU_ENV=keep or PICO_NO_REEXEC=1 is set, and never
// overrides a variable the user set, except for raising OPENBLAS_CORETYPE (PICO_CPU_ENV=keep
// keeps it). Not thread tuning at run time: that is torch::set_num_threads in the trainer.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace pico {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512 = false;  // F, DQ, BW, VL and the OS saves the ZMM state
};
CpuFeatures detect_cpu_features();

// The (name, value) pairs ensure_cpu_environment would set in the current environment.
std::vector<std::pair<std::string, std::string>> wanted_cpu_environment();

// Call first thing in main(): may re-execute the process (same argv) with the wanted
// environment, then tunes malloc (below). Returns normally when nothing needs changing or
// the exec failed.
void ensure_cpu_environment(char** argv);

// glibc malloc serves blocks above 128 KiB-32 MiB with fresh mmap()s and returns freed
// memory to the OS, so every step's activations (tens of MiB) page-fault in anew: 10-30% of
// a training step on 2 cores. This keeps freed memory in the heap for reuse (no mmap, no
// trimming); the process keeps its peak footprint. Same as MALLOC_MMAP_MAX_=0
// MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=67108864 in the environment.
// No-op without glibc or under PICO_CPU_ENV=keep.
void tune_malloc_for_training();
// Whether tune_malloc_for_training() has changed malloc's settings in this process. Code that
// would set other malloc thresholds (comm::ZmqOptions::tune_malloc) should then leave them.
bool malloc_tuned_for_training();

}  // namespace pico
