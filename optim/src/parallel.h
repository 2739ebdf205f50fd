// optim/src/parallel.h — when the outer optimizers split work across OpenMP threads.
//
// Threads only ever split independent elements or chunks (never a sum), so the results do
// not depend on the thread count; these thresholds only decide when a parallel region pays
// for itself. They are high on purpose: on a shared or oversubscribed machine every
// fork/join can stall for a scheduler quantum (measured: a 2M-parameter DeMo step took
// 0.09 s of CPU on 1 thread but 1.3 s wall on 2 threads with 8 compilers running).
#pragma once

#include <cstdint>

namespace pico::optim {

// Elements of a chunked DCT / top-k / aggregation (≈ 10–30 ns of work each).
inline constexpr std::int64_t kParallelTransform = std::int64_t{1} << 20;
// Elements of an elementwise fp32 loop (memory-bound, ≈ 1 ns each).
inline constexpr std::int64_t kParallelElementwise = std::int64_t{1} << 22;

}  // namespace pico::optim
