// The metrics (analysis/metrics.h) against numpy/scipy (tests/python/analysis_reference.py)
// on fixed and random matrices, their invariances, and degenerate input.
#include "pico/analysis/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "pico/common/error.h"
#include "support/npy.h"
#include "support/test_util.h"

namespace pico::test {
namespace {

using namespace pico::analysis;

// Relative closeness with an absolute floor.
void expect_close(double got, double want, double rel, const std::string& what) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << what << ": got " << got << ", want nan";
    return;
  }
  if (std::isinf(want)) {
    EXPECT_EQ(got, want) << what;
    return;
  }
  EXPECT_LE(std::abs(got - want), rel * std::max(1.0, std::abs(want))) << what << ": got " << got << ", want " << want;
}

double json_number(const nlohmann::json& j) {
  return j.is_null() ? std::numeric_limits<double>::quiet_NaN() : j.get<double>();
}

torch::Tensor rank_deficient(std::int64_t rows, std::int64_t cols, std::int64_t rank,
                             torch::ScalarType dtype = torch::kFloat) {
  return torch::randn({rows, rank}, dtype).mm(torch::randn({rank, cols}, dtype));
}

// Tensors for the single-matrix metrics: fixed ones with known values, random ones of every
// aspect, a rank-deficient one, a sparse one, a tiny and a huge scale.
std::map<std::string, torch::Tensor> single_inputs() {
  torch::manual_seed(11);
  std::map<std::string, torch::Tensor> m;
  m["fixed_3x4"] = torch::tensor({{1.0f, 2.0f, 0.0f, -1.0f}, {0.5f, -3.0f, 4.0f, 2.0f}, {0.0f, 0.0f, 1.0f, 7.0f}});
  m["fixed_diag"] = torch::diag(torch::tensor({4.0f, 2.0f, 1.0f}));
  m["random_64x48"] = torch::randn({64, 48});
  m["random_48x64"] = torch::randn({48, 64});
  m["random_tall_200x30"] = torch::randn({200, 30}) * 0.05;
  m["rank5_40x30"] = rank_deficient(40, 30, 5);
  m["sparse_50x50"] = torch::randn({50, 50}) * (torch::rand({50, 50}) < 0.05).to(torch::kFloat);
  m["row_1x10"] = torch::randn({1, 10});
  m["huge_20x20"] = torch::randn({20, 20}) * 1e4;
  m["tiny_20x20"] = torch::randn({20, 20}) * 1e-4;
  m["wide_range_60x60"] =
      torch::randn({60, 60}) * torch::exp(torch::randn({60, 60}) * 8);  // radix-sort path, many exponents
  m["ill_conditioned_16x16"] =
      torch::randn({16, 16}).mm(torch::diag(torch::logspace(0, -5, 16))).mm(torch::randn({16, 16}));
  return m;
}

// (x, y) pairs of activations (n samples × neurons) for CKA / PWCCA.
std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> pair_inputs() {
  torch::manual_seed(12);
  std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> m;
  auto x = torch::randn({200, 20}) + torch::linspace(-3, 3, 20);  // non-zero neuron means
  m["related_200x20_30"] = {x, x.mm(torch::randn({20, 30})) + 0.5 * torch::randn({200, 30}) + 1.0};
  m["unrelated_300x16_24"] = {torch::randn({300, 16}), torch::randn({300, 24}) * 3 - 2};
  // fewer kept neurons on the y side: PWCCA weights from y
  auto z = torch::randn({400, 40});
  m["y_smaller_400x40_12"] = {z, z.narrow(1, 0, 12) * 2 + 0.3 * torch::randn({400, 12})};
  // more neurons than samples: CKA only (sample-space path)
  auto w = torch::randn({10, 64});
  m["wide_10x64_96"] = {w, torch::cat({w, torch::randn({10, 32})}, 1)};
  return m;
}

TEST(AnalysisMetrics, MatchNumpyScipyOnFixedAndRandomMatrices) {
  TempDir dir;
  const auto singles = single_inputs();
  const auto pairs = pair_inputs();
  for (const auto& [name, t] : singles) save_npy(dir.file("a_" + name + ".npy"), t);
  for (const auto& [name, xy] : pairs) {
    save_npy(dir.file("x_" + name + ".npy"), xy.first);
    save_npy(dir.file("y_" + name + ".npy"), xy.second);
  }
  const auto r = run_command(python() + " " + source_dir() + "/tests/python/analysis_reference.py metrics " +
                             dir.path() + " " + dir.file("ref.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto ref = nlohmann::json::parse(read_text(dir.file("ref.json")));

  // Tolerances: all of pico computes in float64 from the same float32 values, so the
  // elementwise metrics agree to rounding (1e-12 relative); SVD-based ones to 1e-9 (two
  // LAPACK paths: torch's gesdd vs scipy's); CKA 1e-10; PWCCA 1e-7 (eigh of Σ vs eigh of
  // pinv(Σ), conditioned up to 1/ε = 1e6).
  for (const auto& [name, t] : singles) {
    const auto& want = ref["single"][name];
    const torch::Tensor s = singular_values(t);
    expect_close(gini(t), json_number(want["gini"]), 1e-12, name + " gini");
    expect_close(hoyer(t), json_number(want["hoyer"]), 1e-12, name + " hoyer");
    expect_close(norm_frobenius(t), json_number(want["norm_frobenius"]), 1e-12, name + " frobenius");
    expect_close(norm_inf(t), json_number(want["norm_inf"]), 1e-12, name + " inf");
    expect_close(norm_nuclear(s), json_number(want["norm_nuclear"]), 1e-9, name + " nuclear");
    expect_close(proportional_effective_rank(s), json_number(want["per"]), 1e-9, name + " per");
    const double cond = condition_number(s), cond_ref = json_number(want["condition_number"]);
    if (name == "rank5_40x30") {
      // Exactly rank 5 in exact arithmetic: both SVDs return rounding noise for σ_min.
      EXPECT_GT(cond, 1e6) << name;
      EXPECT_GT(cond_ref, 1e6) << name;
    } else {
      expect_close(cond, cond_ref, 1e-7, name + " condition number");
    }
  }
  for (const auto& [name, xy] : pairs) {
    const auto& want = ref["pairs"][name];
    expect_close(linear_cka(xy.first, xy.second), json_number(want["cka"]), 1e-10, name + " cka");
    if (want.contains("pwcca")) {
      const auto p = pwcca(xy.first, xy.second);
      expect_close(p.value, json_number(want["pwcca"]), 1e-7, name + " pwcca");
      EXPECT_NEAR(p.weights.sum().item<double>(), 1.0, 1e-12) << name;
      // ε = 1e-6 (pico) vs ε = 0 (pico-analyze as written, see metrics.h): a tiny change here.
      if (!want["pwcca_eps0"].is_null()) {
        EXPECT_NEAR(p.value, json_number(want["pwcca_eps0"]), 1e-4) << name;
      }
    } else {
      EXPECT_THROW(pwcca(xy.first, xy.second), Error) << name;
    }
  }
  // Hand-checked values: gini of [1,2,0,-1 ...] etc. are covered by numpy; a few exact ones:
  EXPECT_NEAR(proportional_effective_rank(singular_values(singles.at("fixed_diag"))),
              std::exp(-(4.0 / 7 * std::log(4.0 / 7) + 2.0 / 7 * std::log(2.0 / 7) + 1.0 / 7 * std::log(1.0 / 7))) / 3,
              1e-12);
  EXPECT_NEAR(condition_number(singular_values(singles.at("fixed_diag"))), 4.0, 1e-12);
  EXPECT_NEAR(norm_nuclear(singular_values(singles.at("fixed_diag"))), 7.0, 1e-12);
}

TEST(AnalysisMetrics, InvarianceProperties) {
  torch::manual_seed(21);
  const torch::Tensor x = torch::randn({120, 24}, torch::kDouble) + 2.0;
  const torch::Tensor y = x.mm(torch::randn({24, 16}, torch::kDouble)) + torch::randn({120, 16}, torch::kDouble);
  const torch::Tensor q = std::get<0>(at::linalg_qr(torch::randn({24, 24}, torch::kDouble), "reduced"));  // orthogonal

  // CKA: 1 with itself, symmetric, invariant to orthogonal transforms and isotropic scaling.
  EXPECT_NEAR(linear_cka(x, x), 1.0, 1e-12);
  const double c = linear_cka(x, y);
  EXPECT_GT(c, 0.0);
  EXPECT_LT(c, 1.0);
  EXPECT_NEAR(linear_cka(y, x), c, 1e-12);
  EXPECT_NEAR(linear_cka(x.mm(q), y), c, 1e-10);
  EXPECT_NEAR(linear_cka(x * 37.5, y * 1e-3), c, 1e-12);
  EXPECT_NEAR(linear_cka(x + 5.0, y - 3.0), c, 1e-10);  // centering
  // ... but not to non-isotropic scaling of features.
  EXPECT_GT(std::abs(linear_cka(x * torch::linspace(0.1, 10, 24, torch::kDouble), y) - c), 1e-3);

  // PWCCA: 1 against itself and against any invertible linear map of itself; in [0, 1];
  // independent of neuron offsets (pico centers, metrics.h) and of the sign of each
  // singular vector (flip the whole representation).
  // Exactly without regularization; with ε = 1e-6 added to the (max-normalized) covariances
  // each canonical correlation shrinks by about ε/λ_min of them, so 1 − O(1e-4) here.
  const torch::Tensor a = torch::randn({24, 24}, torch::kDouble) + 3 * torch::eye(24, torch::kDouble);
  EXPECT_NEAR(pwcca(x, x, 0.0).value, 1.0, 1e-10);
  EXPECT_NEAR(pwcca(x, x.mm(a), 0.0).value, 1.0, 1e-8);
  EXPECT_NEAR(pwcca(x, x).value, 1.0, 1e-5);
  EXPECT_NEAR(pwcca(x, x.mm(a)).value, 1.0, 1e-3);
  EXPECT_LT(pwcca(x, x.mm(a)).value, pwcca(x, x.mm(a), 0.0).value);
  const double p = pwcca(x, y).value;
  EXPECT_GT(p, 0.0);
  EXPECT_LE(p, 1.0);
  EXPECT_NEAR(pwcca(x + torch::linspace(-50, 50, 24, torch::kDouble), y).value, p, 1e-9);
  EXPECT_NEAR(pwcca(-x, y).value, p, 1e-9);
  const auto pr = pwcca(x, y);
  EXPECT_TRUE((pr.correlations >= 0).all().item<bool>());
  EXPECT_TRUE((pr.correlations <= 1 + 1e-9).all().item<bool>());

  // Gini and Hoyer: scale-invariant, in [0, 1], extremes at uniform / one-hot.
  const torch::Tensor w = torch::randn({30, 40}, torch::kDouble);
  EXPECT_NEAR(gini(w * 1e3), gini(w), 1e-12);
  EXPECT_NEAR(gini(-w), gini(w), 1e-12);
  EXPECT_NEAR(hoyer(w * 1e-3), hoyer(w), 1e-12);
  EXPECT_NEAR(gini(torch::full({10, 10}, 3.0)), 0.0, 1e-12);
  EXPECT_NEAR(hoyer(torch::full({10, 10}, -3.0)), 0.0, 1e-12);
  torch::Tensor one_hot = torch::zeros({10, 10});
  one_hot[3][4] = 5.0;
  EXPECT_NEAR(hoyer(one_hot), 1.0, 1e-12);
  EXPECT_NEAR(gini(one_hot), 0.99, 1e-12);  // (n − 1)/n for one non-zero of n = 100
  for (double v : {gini(w), hoyer(w)}) {
    EXPECT_GE(v, 0.0);
    EXPECT_LE(v, 1.0);
  }

  // PER in (0, 1], 1 for equal singular values (an orthogonal matrix); scale-invariant.
  const double per_w = proportional_effective_rank(singular_values(w));
  EXPECT_GT(per_w, 0.0);
  EXPECT_LE(per_w, 1.0);
  EXPECT_NEAR(proportional_effective_rank(singular_values(q)), 1.0, 1e-12);
  EXPECT_NEAR(proportional_effective_rank(singular_values(w * 9)), per_w, 1e-12);
  EXPECT_NEAR(proportional_effective_rank(singular_values(rank_deficient(30, 30, 1, torch::kDouble))), 1.0 / 30, 1e-6);

  // Condition number ≥ 1, 1 for orthogonal, scale-invariant, +inf for exact rank deficiency.
  EXPECT_GE(condition_number(singular_values(w)), 1.0);
  EXPECT_NEAR(condition_number(singular_values(q)), 1.0, 1e-12);
  EXPECT_NEAR(condition_number(singular_values(w * 1e4)), condition_number(singular_values(w)), 1e-8);
  EXPECT_EQ(condition_number(torch::tensor({3.0, 1.0, 0.0})), std::numeric_limits<double>::infinity());

  // Norms: nuclear ≥ Frobenius ≥ inf (max |x|); Frobenius² = Σσ²; homogeneous.
  const torch::Tensor s = singular_values(w);
  EXPECT_GE(norm_nuclear(s), norm_frobenius(w));
  EXPECT_GE(norm_frobenius(w), norm_inf(w));
  EXPECT_NEAR(norm_frobenius(w), std::sqrt((s * s).sum().item<double>()), 1e-10);
  EXPECT_NEAR(norm_frobenius(w * -2), 2 * norm_frobenius(w), 1e-12);

  // Cosine.
  EXPECT_NEAR(analysis::cosine_similarity(w, w * 3), 1.0, 1e-12);
  EXPECT_NEAR(analysis::cosine_similarity(w, -w), -1.0, 1e-12);
}

TEST(AnalysisMetrics, DegenerateInputGivesNanNotACrash) {
  const torch::Tensor zero = torch::zeros({8, 6});
  EXPECT_EQ(gini(zero), 0.0);
  EXPECT_TRUE(std::isnan(hoyer(zero)));
  EXPECT_TRUE(std::isnan(proportional_effective_rank(singular_values(zero))));
  EXPECT_TRUE(std::isnan(condition_number(singular_values(zero))));
  EXPECT_EQ(norm_frobenius(zero), 0.0);
  EXPECT_TRUE(std::isnan(hoyer(torch::ones({1}))));  // n = 1
  const torch::Tensor constant = torch::ones({20, 4});
  EXPECT_TRUE(std::isnan(linear_cka(constant, torch::randn({20, 3}))));
  EXPECT_TRUE(std::isnan(pwcca(constant, torch::randn({20, 3})).value));
  EXPECT_TRUE(std::isnan(analysis::cosine_similarity(zero, torch::ones({8, 6}))));
  // Shapes that cannot work are errors naming the problem, with a HINT.
  try {
    pwcca(torch::randn({8, 32}), torch::randn({8, 32}));
    FAIL() << "pwcca of 8 samples of 32 neurons should throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more samples than neurons"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("checkpointing.learning_dynamics.batch_size"), std::string::npos) << e.hint();
  }
  EXPECT_THROW(linear_cka(torch::randn({8, 4}), torch::randn({9, 4})), Error);
  EXPECT_THROW(singular_values(torch::randn({3, 4, 5})), Error);
}

}  // namespace
}  // namespace pico::test
