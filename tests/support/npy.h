// tests/support/npy.h — .npy files, so tests can hand tensors to numpy/torch references.
#pragma once

#include <torch/torch.h>

#include <string>

namespace pico::test {

// Writes a contiguous CPU copy of `t` (float32, float64, int64 or int32) as .npy v1.0.
void save_npy(const std::string& path, const torch::Tensor& t);
// Reads a little-endian C-order .npy of float32/float64/int64/int32.
torch::Tensor load_npy(const std::string& path);

}  // namespace pico::test
