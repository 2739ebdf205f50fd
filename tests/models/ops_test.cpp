// Gradient checks for the fused CPU ops (pico/models/ops.h): every fused forward and
// backward, on every instruction set this CPU can run, against the plain-op reference
// evaluated in float64 on the same inputs (autograd of plain torch ops is the independent
// reference). Tolerance: the fp32 kernels must agree with float64 to 2e-5 of the largest
// reference magnitude (float32 rounding over sums of a few hundred terms is ~1e-6).
#include "pico/models/ops.h"

#include <gtest/gtest.h>

#include <functional>

#include "pico/common/error.h"
#include "pico/models/decoder.h"

namespace pico::models {
namespace {

constexpr double kRelTol = 2e-5;

// max |a − b| relative to max |b|.
double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-30);
  return (a.to(torch::kFloat64) - b).abs().max().item<double>() / scale;
}

struct IsaGuard {
  explicit IsaGuard(const std::string& isa) { ops::set_cpu_kernel_isa_for_testing(isa); }
  ~IsaGuard() { ops::set_cpu_kernel_isa_for_testing(""); }
};

// Runs fn on float32 leaves (fused path) and on float64 copies (reference path), with the
// same random upstream gradient, and compares the output and every input's gradient.
void check_against_float64(const std::string& what, const std::vector<torch::Tensor>& inputs,
                           const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& fn,
                           double tol = kRelTol) {
  std::vector<torch::Tensor> f32, f64;
  for (const auto& x : inputs) {
    f32.push_back(x.is_floating_point() ? x.to(torch::kFloat32).detach().requires_grad_(true) : x);
    f64.push_back(x.is_floating_point() ? x.to(torch::kFloat64).detach().requires_grad_(true) : x);
  }
  const auto y32 = fn(f32);
  const auto y64 = fn(f64);
  ASSERT_EQ(y32.scalar_type(), torch::kFloat32) << what;
  ASSERT_EQ(y32.sizes(), y64.sizes()) << what;
  EXPECT_LT(rel_err(y32, y64), tol) << what << ": output";
  const auto g = torch::randn(y64.sizes(), torch::kFloat64);
  y32.backward(g.to(torch::kFloat32));
  y64.backward(g);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].is_floating_point()) continue;
    ASSERT_TRUE(f32[i].grad().defined()) << what << ": no gradient for input " << i;
    EXPECT_LT(rel_err(f32[i].grad(), f64[i].grad()), tol) << what << ": gradient of input " << i;
  }
}

class FusedOps : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    torch::manual_seed(7);
    ASSERT_TRUE(ops::fused_kernels_enabled());
  }
};

TEST_P(FusedOps, RmsNormMatchesFloat64) {
  IsaGuard isa(GetParam());
  for (std::int64_t c : {8, 37, 128}) {
    const auto x = torch::randn({3, 7, c}, torch::kFloat64) * 2;
    const auto w = torch::randn({c}, torch::kFloat64);
    check_against_float64(str("rms_norm c=", c), {x, w},
                          [](const auto& in) { return ops::rms_norm(in[0], in[1], 1e-6); });
  }
}

TEST_P(FusedOps, SwigluMatchesFloat64) {
  IsaGuard isa(GetParam());
  for (std::int64_t h : {5, 16, 40}) {
    auto ab = torch::randn({4, 3, 2 * h}, torch::kFloat64) * 3;
    ab[0][0][0] = 95.0;  // beyond the exp clamp on both sides
    ab[0][0][1] = -95.0;
    check_against_float64(str("swiglu h=", h), {ab}, [](const auto& in) { return ops::swiglu(in[0]); });
  }
}

TEST_P(FusedOps, CausalAttentionMatchesFloat64) {
  IsaGuard isa(GetParam());
  struct Shape {
    std::int64_t T, H, KV, hd;
  };
  // Sequences shorter than, equal to and longer than one 64-row block, not multiples of 16;
  // head sizes below, at and above 16; multi-query, grouped and plain multi-head.
  for (const Shape s : {Shape{1, 2, 1, 8}, Shape{5, 4, 2, 8}, Shape{17, 4, 1, 16}, Shape{64, 2, 2, 16},
                        Shape{70, 4, 2, 34}, Shape{131, 4, 4, 8}}) {
    const std::int64_t B = 2;
    const auto qkv = torch::randn({B, s.T, (s.H + 2 * s.KV) * s.hd}, torch::kFloat64);
    const auto ang = torch::rand({s.T, s.hd / 2}, torch::kFloat64) * 6;
    const auto cos = torch::cat({ang.cos(), ang.cos()}, -1), sin = torch::cat({ang.sin(), ang.sin()}, -1);
    check_against_float64(str("attention T=", s.T, " H=", s.H, " KV=", s.KV, " hd=", s.hd), {qkv}, [&](const auto& in) {
      const auto dt = in[0].scalar_type();
      return ops::causal_attention(in[0], cos.to(dt), sin.to(dt), s.H, s.KV);
    });
  }
}

TEST_P(FusedOps, LinearCrossEntropyMatchesFloat64) {
  IsaGuard isa(GetParam());
  struct Shape {
    std::int64_t N, C, V;
  };
  // V = 20000 makes the fused op work through 64-row chunks (the last one partial).
  for (const Shape s : {Shape{1, 8, 11}, Shape{37, 16, 97}, Shape{150, 12, 20000}}) {
    const auto h = torch::randn({s.N, s.C}, torch::kFloat64);
    const auto w = torch::randn({s.V, s.C}, torch::kFloat64);
    const auto t = torch::randint(0, s.V, {s.N}, torch::kLong);
    check_against_float64(str("linear_cross_entropy N=", s.N, " V=", s.V), {h, w, t},
                          [](const auto& in) { return ops::linear_cross_entropy(in[0], in[1], in[2]); });
  }
}

TEST(FusedOpsMisc, LinearMatchesFloat64) {
  torch::manual_seed(9);
  for (const auto& shape : std::vector<std::vector<std::int64_t>>{{5, 3}, {2, 7, 64}, {300, 130}}) {
    const auto x = torch::randn(shape, torch::kFloat64);
    const auto w = torch::randn({37, shape.back()}, torch::kFloat64);
    check_against_float64(str("linear ", x.sizes()), {x, w}, [](const auto& in) { return ops::linear(in[0], in[1]); });
  }
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, FusedOps, ::testing::ValuesIn(ops::available_cpu_kernel_isas()),
                         [](const auto& info) { return info.param; });

TEST(FusedOpsMisc, CrossEntropyScalesByTheUpstreamGradientAndSkipsItWithoutGrad) {
  torch::manual_seed(3);
  const auto h = torch::randn({20, 8}).requires_grad_(true);
  const auto w = torch::randn({33, 8}).requires_grad_(true);
  const auto t = torch::randint(0, 33, {20}, torch::kLong);
  (ops::linear_cross_entropy(h, w, t) * 0.25).backward();
  const auto gh = h.grad().clone(), gw = w.grad().clone();
  h.mutable_grad().zero_();
  w.mutable_grad().zero_();
  ops::linear_cross_entropy_reference(h, w, t).backward();
  EXPECT_TRUE(torch::allclose(gh, h.grad() * 0.25, 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(gw, w.grad() * 0.25, 1e-5, 1e-7));
  torch::NoGradGuard no_grad;
  EXPECT_NEAR(ops::linear_cross_entropy(h, w, t).item<double>(),
              ops::linear_cross_entropy_reference(h, w, t).item<double>(), 1e-5);
}

TEST(FusedOpsMisc, CrossEntropyRefusesTargetsOutsideTheVocabulary) {
  const auto h = torch::randn({4, 8});
  const auto w = torch::randn({10, 8});
  for (std::int64_t bad : {-1, 10}) {
    auto t = torch::zeros({4}, torch::kLong);
    t[2] = bad;
    try {
      ops::linear_cross_entropy(h, w, t);
      FAIL() << "target " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
  }
}

TEST(FusedOpsMisc, GradientsDoNotDependOnTheThreadCount) {
  torch::manual_seed(5);
  const auto x = torch::randn({4, 300, 64});
  const auto w = torch::randn({64});
  const auto qkv = torch::randn({3, 100, (4 + 2 * 2) * 16});
  const auto ang = torch::rand({100, 8});
  const auto cos = torch::cat({ang.cos(), ang.cos()}, -1), sin = torch::cat({ang.sin(), ang.sin()}, -1);
  auto grads = [&](int threads) {
    const int before = torch::get_num_threads();
    torch::set_num_threads(threads);
    auto xl = x.clone().requires_grad_(true), wl = w.clone().requires_grad_(true),
         ql = qkv.clone().requires_grad_(true);
    (ops::rms_norm(xl, wl, 1e-6).pow(2).sum() + ops::causal_attention(ql, cos, sin, 4, 2).pow(2).sum()).backward();
    torch::set_num_threads(before);
    return std::vector<torch::Tensor>{xl.grad(), wl.grad(), ql.grad()};
  };
  const auto one = grads(1), two = grads(2);
  for (std::size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(torch::equal(one[i], two[i])) << "gradient " << i;
}

// ops.cpp must be compiled with OpenMP: ATen's parallel_for is inline, and without -fopenmp
// it silently runs every fused kernel on one thread (as it did before this test existed).
TEST(FusedOpsMisc, FusedKernelsRunOnEveryIntraOpThread) {
  const int before = torch::get_num_threads();
  torch::set_num_threads(2);
  const int used = ops::fused_op_threads_for_testing();
  torch::set_num_threads(before);
  EXPECT_EQ(used, 2);
}

// The whole decoder: fused float32 loss and gradients against the plain-op model in float64.
TEST(FusedOpsMisc, DecoderLossAndGradientsMatchThePlainFloat64Model) {
  ModelConfig c;
  c.d_model = 64;
  c.n_layers = 2;
  c.vocab_size = 101;
  c.max_seq_len = 40;
  c.attention_n_heads = 4;
  c.attention_n_kv_heads = 2;
  c.activation_hidden_dim = 96;
  PicoDecoder fused(c, 11), plain(c, 11);
  plain->to(torch::kFloat64);
  torch::manual_seed(1);
  const auto x = torch::randint(0, 101, {3, 40}, torch::kLong), y = torch::randint(0, 101, {3, 40}, torch::kLong);
  const auto lf = fused->loss(x, y);
  const auto lp = plain->loss(x, y);
  EXPECT_NEAR(lf.item<double>(), lp.item<double>(), 1e-5 * lp.item<double>());
  lf.backward();
  lp.backward();
  const auto pf = fused->named_params(), pp = plain->named_params();
  for (std::size_t i = 0; i < pf.size(); ++i)
    EXPECT_LT(rel_err(pf[i].second.grad(), pp[i].second.grad()), 1e-4) << pf[i].first;
}

TEST(FusedOpsMisc, ReportsItsInstructionSets) {
  const auto isas = ops::available_cpu_kernel_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.back(), "generic");
  EXPECT_EQ(ops::cpu_kernel_isa(), isas.front());
  EXPECT_THROW(ops::set_cpu_kernel_isa_for_testing("no-such-isa"), Error);
}

}  // namespace
}  // namespace pico::models
