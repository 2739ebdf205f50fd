// pico/analysis/metrics.h — the learning-dynamics metrics of pico-analyze, on plain tensors.
//
// Definitions follow pico-analyze (github.com/pico-lm/pico-analyze, src/metrics/*.py and the
// SVCCA code it vendors in lib/svcca/); where pico deviates, the function's comment says how
// and why. Every function takes CPU tensors of any floating dtype, computes in float64 and
// returns a double (pico-analyze computes the SVD metrics in float32; float64 only removes
// rounding). Degenerate input (an all-zero matrix, constant activations) gives NaN, never a
// crash; a rank-deficient matrix has condition number +inf.
//
// What this is not: it knows nothing of checkpoints, layers or heads (components.h), nor of
// which data a metric may be used on (config.h).
#pragma once

#include <torch/torch.h>

namespace pico::analysis {

// Singular values of a 2-D matrix, descending, float64: shape (min(rows, cols)).
torch::Tensor singular_values(const torch::Tensor& m);

// Gini coefficient of |x| (pico-analyze gini.py): with a = sort(|x|) ascending, n = numel,
//   G = Σ_{i=1..n} (2i − n − 1)·a_i / (n·Σa).
// 0 for uniform magnitudes, → 1 when one entry holds all the mass; 0 when x is all zero
// (pico-analyze's convention). Scale-invariant.
double gini(const torch::Tensor& x);

// Hoyer sparsity (pico-analyze hoyer.py): (√n − ‖x‖₁/‖x‖₂) / (√n − 1), n = numel.
// In [0, 1]; 1 for a single non-zero entry. NaN for n = 1 or x all zero.
double hoyer(const torch::Tensor& x);

// Norms (pico-analyze norm.py uses torch.norm with p = "fro", "nuc", inf):
//   frobenius = √Σx²; nuclear = Σσ_i; inf = max |x_ij|. Note: torch.norm(x, p=inf) without
// `dim` flattens the matrix, so pico-analyze's "inf" norm is the largest magnitude entry, not
// the induced ∞-norm (max row sum); pico keeps that definition.
double norm_frobenius(const torch::Tensor& x);
double norm_inf(const torch::Tensor& x);
double norm_nuclear(const torch::Tensor& singular_values);

// Proportional effective rank (pico-analyze per.py): with p = s/Σs over the singular values,
//   PER = exp(−Σ p_i ln p_i) / len(s)
// with 0·ln 0 = 0 (pico-analyze's torch code would give NaN for an exactly zero singular
// value). In (0, 1]; 1 when all singular values are equal. NaN for the zero matrix.
double proportional_effective_rank(const torch::Tensor& singular_values);

// σ_max / σ_min (pico-analyze condition_number.py). ≥ 1; +inf when σ_min = 0; NaN for the
// zero matrix.
double condition_number(const torch::Tensor& singular_values);

// Linear CKA between activations x (n, p) and y (n, q) of the same n samples (pico-analyze
// cka.py → feature_space_linear_cka of Kornblith et al. 2019, biased HSIC):
//   X, Y = columns centered;  CKA = ‖XᵀY‖²_F / (‖XᵀX‖_F · ‖YᵀY‖_F).
// Computed as ⟨XXᵀ, YYᵀ⟩_F / (‖XXᵀ‖_F ‖YYᵀ‖_F) when that is cheaper (n small): the same
// number. 1 for x = y; invariant to orthogonal transforms and isotropic scaling of either
// side. NaN when either side is constant.
double linear_cka(const torch::Tensor& x, const torch::Tensor& y);

// Projection-weighted CCA (Morcos et al. 2018), as pico-analyze computes it with the SVCCA
// code (lib/svcca/pwcca.py compute_pwcca + cca_core.py get_cca_similarity), ε = 1e-6:
//  1. Σ = covariance of [x y] over the n samples (n − 1 normalization); Σxx /= max|Σxx|,
//     Σyy /= max|Σyy|, Σxy /= √(max|Σxx|·max|Σyy|).
//  2. Keep neurons whose scaled variance is ≥ ε; add ε·I to Σxx and Σyy.
//  3. SVD of Σxx^{-1/2} Σxy Σyy^{-1/2} = U diag(ρ) Vᵀ: ρ are the canonical correlations.
//  4. On the side with fewer kept neurons (x on a tie): directions D = Uᵀ·X_centeredᵀ (or
//     Vᵀ·Y_centeredᵀ), P = Q of QR(Dᵀ) (n × k, orthonormal), weights
//     α_i = Σ_j |⟨P_i, a_j⟩| over that side's neurons a_j, normalized to Σα = 1.
//  5. PWCCA = Σ α_i ρ_i.
// Two deliberate differences from the code as written, both documented in
// docs/ANALYSIS.md: (a) the SVCCA code adds each neuron's mean back to direction i
// (D_i + mean_i), which makes the result depend on the arbitrary sign LAPACK gives each
// singular vector; pico centers the activations, where that term vanishes and the value is
// sign-independent (for centered input both agree exactly). (b) pico-analyze passes
// epsilon=1e-6 to robust_cca_similarity, which does not forward it, so its CCA runs with
// ε = 0; pico applies ε = 1e-6 as the SVCCA code intends (a change of order ε on
// well-conditioned data). Its "else" branch also projects x's activations where y's are
// meant; pico uses y's (that branch is only taken when y has fewer kept neurons).
// Requires more samples than neurons on both sides (n > p, n > q), as the SVCCA code
// asserts; throws pico::Error otherwise. NaN when either side is constant.
inline constexpr double kPwccaEpsilon = 1e-6;
struct PwccaResult {
  double value = 0;
  torch::Tensor correlations;  // ρ, descending (k)
  torch::Tensor weights;       // α (k), sum 1
};
PwccaResult pwcca(const torch::Tensor& x, const torch::Tensor& y, double epsilon = kPwccaEpsilon);

// Cosine similarity of two equally-shaped tensors (flattened); NaN if either is zero.
double cosine_similarity(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace pico::analysis
