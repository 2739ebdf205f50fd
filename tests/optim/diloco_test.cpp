// DiLoCo's outer step (optim/diloco.h): hand-computed Nesterov/heavy-ball/plain steps,
// torch.optim.SGD as an independent reference, the 1-contributor equivalence, the flat
// pseudo-gradient, state and hash, and the errors.
#include "pico/optim/diloco.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "pico/common/error.h"
#include "pico/common/hash.h"
#include "support/npy.h"
#include "support/test_util.h"

namespace pico::optim {
namespace {

NamedTensors two_params(float a, float b) {
  return {{"w", torch::tensor({a}, torch::kFloat32)}, {"v", torch::tensor({b}, torch::kFloat32)}};
}

std::vector<float> theta(const DiLoCo& d) {
  std::vector<float> out;
  for (const auto& [n, t] : d.global_params())
    for (std::int64_t i = 0; i < t.numel(); ++i) out.push_back(t.data_ptr<float>()[i]);
  return out;
}

TEST(DiLoCoConfig, ValidateNamesTheKey) {
  DiLoCoConfig c;
  EXPECT_NO_THROW(c.validate());
  c.lr = 0;
  try {
    c.validate();
    FAIL() << "lr 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outer.lr"), std::string::npos) << e.what();
  }
  c = {};
  c.momentum = 1.0;
  try {
    c.validate();
    FAIL() << "momentum 1 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outer.momentum"), std::string::npos) << e.what();
  }
  c.momentum = std::nan("");
  EXPECT_THROW(c.validate(), Error);
  EXPECT_THROW(DiLoCo(two_params(1, 2), c), Error);
}

// θ_g = (1, −2), lr 0.5, μ 0.5 and Δ that are binary fractions, so every intermediate is
// exact in fp32 and the expected values below are worked out by hand:
//   Δ1 = (0.5, 1):   b = Δ1 = (0.5, 1)
//   Δ2 = (0.25, −1): b = 0.5·(0.5, 1) + (0.25, −1) = (0.5, −0.5)
//   Δ3 = (0, 0.5):   b = 0.5·(0.5, −0.5) + (0, 0.5) = (0.25, 0.25)
// nesterov: u = Δ + μ·b = (0.75, 1.5), (0.5, −1.25), (0.125, 0.625)
//   θ: (1 − 0.375, −2 − 0.75) = (0.625, −2.75) → (0.375, −2.125) → (0.3125, −2.4375)
// heavy ball: u = b: θ → (0.75, −2.5) → (0.5, −2.25) → (0.375, −2.375)
// μ = 0: u = Δ: θ → (0.75, −2.5) → (0.625, −2) → (0.625, −2.25)   (nesterov or not)
TEST(DiLoCo, OuterStepsMatchHandComputedValues) {
  const float deltas[3][2] = {{0.5f, 1.0f}, {0.25f, -1.0f}, {0.0f, 0.5f}};
  struct Case {
    double momentum;
    bool nesterov;
    float expect[3][2];
  };
  const Case cases[] = {
      {0.5, true, {{0.625f, -2.75f}, {0.375f, -2.125f}, {0.3125f, -2.4375f}}},
      {0.5, false, {{0.75f, -2.5f}, {0.5f, -2.25f}, {0.375f, -2.375f}}},
      {0.0, true, {{0.75f, -2.5f}, {0.625f, -2.0f}, {0.625f, -2.25f}}},
      {0.0, false, {{0.75f, -2.5f}, {0.625f, -2.0f}, {0.625f, -2.25f}}},
  };
  for (const auto& c : cases) {
    DiLoCo d(two_params(1.0f, -2.0f), {0.5, c.momentum, c.nesterov});
    for (int s = 0; s < 3; ++s) {
      d.step(deltas[s]);
      EXPECT_EQ(theta(d), (std::vector<float>{c.expect[s][0], c.expect[s][1]}))
          << "momentum " << c.momentum << " nesterov " << c.nesterov << " step " << s + 1;
    }
    EXPECT_EQ(d.step_count(), 3);
    if (c.momentum == 0.5) {  // the buffer after step 3 is (0.25, 0.25)
      const auto st = d.state();
      EXPECT_EQ(st[2].first, "w.momentum");
      EXPECT_EQ(st[2].second.item<float>(), 0.25f);
      EXPECT_EQ(st[3].second.item<float>(), 0.25f);
    }
  }
}

TEST(DiLoCo, MatchesTorchOptimSGD) {
  // General values (lr 0.7, μ 0.9) for 4 steps against torch.optim.SGD(nesterov=...) with
  // the pseudo-gradient as .grad. torch may fuse a multiply-add where pico rounds twice,
  // so allow a few fp32 ulps of the values involved.
  torch::manual_seed(5);
  NamedTensors params = {{"a", torch::randn({30, 20})}, {"b", torch::randn({17})}};
  test::TempDir dir;
  for (auto& [n, p] : params) test::save_npy(dir.file(n + "_init.npy"), p);
  std::vector<torch::Tensor> deltas;
  for (int s = 0; s < 4; ++s) {
    deltas.push_back(torch::randn({30 * 20 + 17}) * 0.1);
    test::save_npy(dir.file("delta" + std::to_string(s) + ".npy"), deltas.back());
  }
  for (bool nesterov : {true, false}) {
    DiLoCo d(params, {0.7, 0.9, nesterov});
    for (const auto& delta : deltas) d.step(delta.data_ptr<float>());
    const std::string script = R"PY(
import sys, numpy as np, torch
d, nesterov = sys.argv[1], sys.argv[2] == "1"
ps = [torch.nn.Parameter(torch.from_numpy(np.load(f"{d}/{n}_init.npy"))) for n in "ab"]
opt = torch.optim.SGD(ps, lr=0.7, momentum=0.9, nesterov=nesterov)
for s in range(4):
    flat = torch.from_numpy(np.load(f"{d}/delta{s}.npy"))
    ps[0].grad = flat[:600].reshape(30, 20).clone(); ps[1].grad = flat[600:].clone()
    opt.step()
for n, p in zip("ab", ps): np.save(f"{d}/{n}_ref.npy", p.detach().numpy())
)PY";
    test::write_text(dir.file("ref.py"), script);
    const auto r =
        test::run_command(test::python() + " " + dir.file("ref.py") + " " + dir.path() + " " + (nesterov ? "1" : "0"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto ref = test::load_npy(dir.file(params[i].first + "_ref.npy"));
      const auto& mine = d.global_params()[i].second;
      const double err = (mine - ref).abs().max().item<double>();
      EXPECT_LT(err, 4e-6) << params[i].first << " nesterov " << nesterov;
      std::printf("[diloco vs torch.optim.SGD] %s nesterov=%d: max |Δθ_g| %.2e (max |θ_g| %.2f)\n",
                  params[i].first.c_str(), int{nesterov}, err, mine.abs().max().item<double>());
      EXPECT_GT((mine - params[i].second).abs().max().item<double>(), 0.1) << "did not move";
    }
  }
}

TEST(DiLoCo, OneContributorWithLr1AndNoMomentumLandsOnTheLocalParameters) {
  // θ_g ← θ_g − 1·(θ_g − θ) gives back θ up to two fp32 roundings:
  // Δ̃ = fl(θ_g − θ) = Δ(1+e1), θ' = fl(θ_g − Δ̃) = (θ − Δ·e1)(1+e2), so
  // |θ' − θ| ≤ u·|Δ| + u·|θ| + u²·|Δ| with u = 2^-24. Not forced to be exact.
  torch::manual_seed(9);
  NamedTensors global = {
      {"emb", torch::randn({64, 32})}, {"norm", torch::ones({32})}, {"out", torch::randn({32, 64}) * 1e-3}};
  for (bool nesterov : {true, false}) {
    DiLoCo d(global, {1.0, 0.0, nesterov});
    // "inner training": the local copy moved by steps of several scales
    NamedTensors local;
    for (const auto& [n, p] : global) local.emplace_back(n, p + torch::randn(p.sizes()) * (n == "out" ? 1e-5 : 0.3));
    // and one that collapsed towards 0, where fl(θ_g − θ) loses θ's low bits: not exact
    local[1].second = global[1].second * 1e-4 + torch::randn({32}) * 1e-9;
    std::vector<float> delta(static_cast<std::size_t>(d.numel()));
    d.pseudo_gradient(local, delta.data());
    d.step(delta.data());
    const double u = std::ldexp(1.0, -24);
    std::int64_t off = 0, exact = 0;
    for (std::size_t i = 0; i < local.size(); ++i) {
      const float* th = d.global_params()[i].second.data_ptr<float>();
      const float* lo = local[i].second.data_ptr<float>();
      for (std::int64_t j = 0; j < local[i].second.numel(); ++j) {
        const double dj = std::fabs(double{delta[static_cast<std::size_t>(off + j)]});
        const double bound = u * dj + u * std::fabs(double{lo[j]}) + u * u * dj;
        ASSERT_LE(std::fabs(double{th[j]} - lo[j]), bound * (1 + 1e-9)) << local[i].first << "[" << j << "]";
        exact += th[j] == lo[j];
      }
      off += local[i].second.numel();
    }
    // Most elements come back exactly (Sterbenz); report how many, do not require all.
    EXPECT_GT(exact, d.numel() / 2);
    std::printf(
        "[diloco 1 contributor, lr 1, μ 0] nesterov=%d: %lld of %lld elements exactly equal, all within the bound\n",
        int{nesterov}, static_cast<long long>(exact), static_cast<long long>(d.numel()));
    // copy_to puts θ_g into the model
    NamedTensors model;
    for (const auto& [n, p] : global) model.emplace_back(n, torch::zeros_like(p));
    d.copy_to(model);
    for (std::size_t i = 0; i < model.size(); ++i)
      EXPECT_TRUE(torch::equal(model[i].second, d.global_params()[i].second));
  }
}

TEST(DiLoCo, PseudoGradientIsFlatOldMinusNewAndConvertsDtype) {
  NamedTensors global = {{"a", torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).reshape({2, 2})}, {"b", torch::tensor({0.5f})}};
  DiLoCo d(global, {});
  EXPECT_EQ(d.numel(), 5);
  // the model itself must not alias θ_g
  global[0].second.add_(100);
  NamedTensors local = {{"a", torch::tensor({1.5f, 1.0f, 3.0f, 0.0f}).reshape({2, 2}).to(torch::kBFloat16)},
                        {"b", torch::tensor({0.25}, torch::kFloat64)}};
  std::vector<float> out(5);
  d.pseudo_gradient(local, out.data());
  EXPECT_EQ(out, (std::vector<float>{-0.5f, 1.0f, 0.0f, 4.0f, 0.25f}));
  // copy_to converts back to the local dtype
  d.copy_to(local);
  EXPECT_EQ(local[0].second.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(
      torch::equal(local[0].second.to(torch::kFloat32), torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).reshape({2, 2})));
  EXPECT_EQ(local[1].second.item<double>(), 0.5);
}

TEST(DiLoCo, RejectsMismatchedOrNonFiniteInput) {
  DiLoCo d(two_params(1, 2), {});
  std::vector<float> out(2);
  EXPECT_THROW(d.pseudo_gradient({{"w", torch::ones({1})}}, out.data()), Error);
  EXPECT_THROW(d.pseudo_gradient({{"v", torch::ones({1})}, {"w", torch::ones({1})}}, out.data()), Error);
  EXPECT_THROW(d.pseudo_gradient({{"w", torch::ones({2})}, {"v", torch::ones({1})}}, out.data()), Error);
  EXPECT_THROW(d.pseudo_gradient({{"w", torch::full({1}, NAN)}, {"v", torch::ones({1})}}, out.data()), Error);
  EXPECT_THROW(d.copy_to({{"w", torch::ones({1})}}), Error);
  const std::string before = d.state_hash();
  const float bad[2] = {0.5f, INFINITY};
  try {
    d.step(bad);
    FAIL() << "inf accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("v[0]"), std::string::npos) << e.what();
  }
  EXPECT_EQ(d.state_hash(), before);
  EXPECT_EQ(d.step_count(), 0);
}

TEST(DiLoCo, StateRoundTripsAndHashIsDocumentedBytes) {
  torch::manual_seed(1);
  NamedTensors params = {{"a", torch::randn({3, 4})}, {"b", torch::randn({5})}};
  DiLoCo a(params, {});
  std::vector<float> delta(17);
  for (int s = 0; s < 2; ++s) {
    for (auto& v : delta) v = torch::randn({1}).item<float>();
    a.step(delta.data());
  }
  // hash = SHA-256(θ_g bytes..., momentum bytes..., int64 step)
  Sha256 h;
  for (const auto& [n, t] : a.global_params()) h.update(t.data_ptr<float>(), static_cast<std::size_t>(t.numel()) * 4);
  const auto st = a.state();
  for (int i = 2; i < 4; ++i)
    h.update(st[i].second.data_ptr<float>(), static_cast<std::size_t>(st[i].second.numel()) * 4);
  const std::int64_t step = 2;
  h.update(&step, 8);
  EXPECT_EQ(a.state_hash(), h.hex_digest());
  EXPECT_EQ(a.state_hash().size(), 64u);

  DiLoCo b(params, {});
  EXPECT_NE(b.state_hash(), a.state_hash());
  b.load_state(a.state());
  EXPECT_EQ(b.state_hash(), a.state_hash());
  EXPECT_EQ(b.step_count(), 2);
  for (auto& v : delta) v = torch::randn({1}).item<float>();
  a.step(delta.data());
  b.step(delta.data());
  EXPECT_EQ(b.state_hash(), a.state_hash());

  // bad state: missing, wrong shape, NaN — rejected, nothing changes
  const std::string before = b.state_hash();
  auto missing = a.state();
  missing.erase(missing.begin());
  EXPECT_THROW(b.load_state(missing), Error);
  auto shape = a.state();
  shape[1].second = torch::zeros({4});
  EXPECT_THROW(b.load_state(shape), Error);
  auto nan = a.state();
  nan[0].second = nan[0].second.clone();
  nan[0].second.view(-1)[0] = NAN;
  EXPECT_THROW(b.load_state(nan), Error);
  auto nostep = a.state();
  nostep.pop_back();
  EXPECT_THROW(b.load_state(nostep), Error);
  EXPECT_EQ(b.state_hash(), before);
}

TEST(DiLoCo, ThreadCountDoesNotChangeTheBits) {
  // Large enough for the parallel loops (≥ 2^22 elements); 1 and 2 threads must agree bit for bit.
  torch::manual_seed(2);
  NamedTensors params = {{"w", torch::randn({2048, 2048})}};
  const auto delta = torch::randn({2048 * 2048}) * 0.01;
  std::vector<std::string> hashes;
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    DiLoCo d(params, {});
    for (int s = 0; s < 3; ++s) d.step(delta.data_ptr<float>());
    hashes.push_back(d.state_hash());
  }
  at::set_num_threads(2);
  EXPECT_EQ(hashes[0], hashes[1]);
}

}  // namespace
}  // namespace pico::optim
