// pico/optim/dct.h — DeMo's chunked orthonormal DCT-II: chunk rule, basis, encode/decode.
//
// The orthonormal DCT-II of length N (scipy dct(type=2, norm="ortho")) is the matrix
//   C[k, n] = s_k · cos(π (2n+1) k / (2N)),  s_0 = √(1/N), s_k = √(2/N)      (k, n < N)
// computed here in double and rounded to float once per entry; C·Cᵀ = I up to that rounding,
// so the inverse (DCT-III) is Cᵀ. DeMo (REFERENCE.md, testdata README) tiles a (R, Cc)
// tensor into (n1 × n2) chunks, n1 = dct_chunk_size(R), n2 = dct_chunk_size(Cc), and
// transforms each chunk X along both axes: E = C1 · X · C2ᵀ. A 1-D tensor (L) is tiled in
// chunks of n = dct_chunk_size(L) and transformed along one axis; here it is the 2-D case
// with R = 1 (a length-1 DCT is the identity), which gives the same numbers and layout.
//
// Coefficient layout (row-major, like the reference's einsum outputs):
//   2-D: (Y, X, n1, n2), Y = R/n1, X = Cc/n2; chunk (y, x) holds E[b, d] at b·n2 + d
//   1-D: (X, n)
// Arithmetic: the fp32 basis entries and the inputs are multiplied and summed in double in
// a fixed order, then rounded to fp32 once per output. The loops are independent per chunk
// (threads split chunks, never a sum), so the result does not depend on the thread count or
// the machine. Decoding skips zero coefficients, so a top-k coefficient tensor decodes in
// O(nnz·(n1 + n2)) per chunk instead of O(n1·n2·(n1 + n2)).
//
// Not here: top-k, aggregation and the optimizer itself (demo.h).
#pragma once

#include <cstdint>
#include <vector>

namespace pico::optim {

// The largest divisor of n that is ≤ target: n itself when n ≤ target; 1 for a prime
// n > target (no compression along that axis). n ≥ 1, target ≥ 1.
std::int64_t dct_chunk_size(std::int64_t n, std::int64_t target);

// C above, (n, n) row-major: entry [k·n + i] is basis function k at sample i.
std::vector<float> dct_basis(std::int64_t n);

// The chunked transform of one parameter of shape `shape` (1-D or 2-D; a 0-D tensor is
// treated as (1)). Throws pico::Error for more than 2 dimensions.
class ChunkedDct {
 public:
  ChunkedDct(const std::vector<std::int64_t>& shape, std::int64_t target_chunk);

  std::int64_t chunk_rows() const { return n1_; }    // n1 (1 for a 1-D tensor)
  std::int64_t chunk_cols() const { return n2_; }    // n2
  std::int64_t grid_rows() const { return gy_; }     // Y (1 for a 1-D tensor)
  std::int64_t grid_cols() const { return gx_; }     // X
  std::int64_t chunks() const { return gy_ * gx_; }  // Y·X chunks
  std::int64_t chunk_numel() const { return n1_ * n2_; }
  std::int64_t numel() const { return rows_ * cols_; }
  // (Y, X, n1, n2) for 2-D, (X, n) for 1-D — the reference's coefficient shape.
  std::vector<std::int64_t> coeff_shape() const;

  // coeffs (coeff_shape) ← the chunked DCT-II of x (the parameter's shape, row-major).
  void encode(const float* x, float* coeffs) const;
  // x ← the inverse (C1ᵀ · E · C2 per chunk) of coeffs; zero coefficients cost nothing.
  void decode(const float* coeffs, float* x) const;

 private:
  bool two_d_ = false;
  std::int64_t rows_ = 1, cols_ = 1, n1_ = 1, n2_ = 1, gy_ = 1, gx_ = 1;
  std::vector<double> c1_;   // (n1, n1): C1[b, h]
  std::vector<double> c2_;   // (n2, n2): C2[d, w]
  std::vector<double> c2t_;  // (n2, n2): C2ᵀ[w, d]
};

}  // namespace pico::optim
