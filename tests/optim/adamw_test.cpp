#include "pico/optim/adamw.h"

#include <gtest/gtest.h>

#include <cmath>

#include "pico/optim/schedule.h"
#include "support/npy.h"
#include "support/test_util.h"

namespace pico::optim {
namespace {

TEST(AdamW, MatchesTorchOptimAdamW) {
  // Three parameters (a matrix, a vector that is not decayed, a matrix), five steps of
  // fixed gradients, against torch.optim.AdamW in python on the same values. The python
  // side puts the vector in a param group with weight_decay 0, as pico does for dim < 2.
  torch::manual_seed(3);
  std::vector<std::pair<std::string, torch::Tensor>> params = {
      {"a", torch::randn({40, 30})}, {"b", torch::randn({30})}, {"c", torch::randn({300, 400})}};
  test::TempDir dir;
  for (auto& [n, p] : params) test::save_npy(dir.file(n + "_init.npy"), p);
  std::vector<std::vector<torch::Tensor>> grads;
  for (int s = 0; s < 5; ++s) {
    grads.emplace_back();
    for (auto& [n, p] : params) {
      grads.back().push_back(torch::randn(p.sizes()));
      test::save_npy(dir.file(n + "_grad" + std::to_string(s) + ".npy"), grads.back().back());
    }
  }
  for (auto& [n, p] : params) p.set_requires_grad(true);
  AdamWConfig cfg{0.9, 0.95, 1e-8, 0.1};
  AdamW opt(params, cfg);
  const double lrs[] = {1e-3, 2e-3, 3e-3, 2e-3, 1e-3};
  for (int s = 0; s < 5; ++s) {
    for (std::size_t i = 0; i < params.size(); ++i) params[i].second.mutable_grad() = grads[s][i].clone();
    opt.step(lrs[s]);
  }
  const std::string script = R"PY(
import sys, numpy as np, torch
d = sys.argv[1]
ps = {n: torch.nn.Parameter(torch.from_numpy(np.load(f"{d}/{n}_init.npy"))) for n in "abc"}
opt = torch.optim.AdamW([{"params": [ps["a"], ps["c"]], "weight_decay": 0.1},
                         {"params": [ps["b"]], "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
for s, lr in enumerate([1e-3, 2e-3, 3e-3, 2e-3, 1e-3]):
    for g in opt.param_groups: g["lr"] = lr
    for n, p in ps.items(): p.grad = torch.from_numpy(np.load(f"{d}/{n}_grad{s}.npy"))
    opt.step()
for n, p in ps.items(): np.save(f"{d}/{n}_ref.npy", p.detach().numpy())
)PY";
  test::write_text(dir.file("ref.py"), script);
  const auto r = test::run_command(test::python() + " " + dir.file("ref.py") + " " + dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (auto& [n, p] : params) {
    const auto ref = test::load_npy(dir.file(n + "_ref.npy"));
    // Same float32 formula, possibly different operation order: a few ulps of lr-sized steps.
    const double err = (p.detach() - ref).abs().max().item<double>();
    EXPECT_LT(err, 1e-6) << n;
    EXPECT_GT((p.detach() - test::load_npy(dir.file(n + "_init.npy"))).abs().max().item<double>(), 1e-3)
        << n << " did not move";
  }
}

TEST(AdamW, StateRoundTrips) {
  std::vector<std::pair<std::string, torch::Tensor>> params = {{"w", torch::randn({4, 4}).requires_grad_()}};
  AdamW a(params, {});
  params[0].second.mutable_grad() = torch::ones({4, 4});
  a.step(1e-3);
  std::vector<std::pair<std::string, torch::Tensor>> params2 = {
      {"w", params[0].second.detach().clone().requires_grad_()}};
  AdamW b(params2, {});
  b.load_state(a.state(), a.step_count());
  params[0].second.mutable_grad() = torch::full({4, 4}, 0.5);
  params2[0].second.mutable_grad() = torch::full({4, 4}, 0.5);
  a.step(1e-3);
  b.step(1e-3);
  EXPECT_TRUE(torch::equal(params[0].second, params2[0].second));
  EXPECT_THROW(b.load_state({}, 1), std::exception);
}

TEST(Schedule, LinearWithWarmupFollowsPicoTrain) {
  ScheduleConfig c{LrSchedule::kLinearWithWarmup, 1.0, 10, 110, 0.1};
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 0.0);
  EXPECT_DOUBLE_EQ(lr_at(c, 5), 0.5);
  EXPECT_DOUBLE_EQ(lr_at(c, 10), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(c, 60), 0.5);
  EXPECT_DOUBLE_EQ(lr_at(c, 110), 0.0);
}

TEST(Schedule, CosineAndConstant) {
  ScheduleConfig c{LrSchedule::kCosine, 2.0, 10, 110, 0.1};
  EXPECT_DOUBLE_EQ(lr_at(c, 10), 2.0);
  EXPECT_NEAR(lr_at(c, 60), 2.0 * (0.1 + 0.9 * 0.5), 1e-12);
  EXPECT_NEAR(lr_at(c, 110), 0.2, 1e-12);
  c.kind = LrSchedule::kConstant;
  EXPECT_DOUBLE_EQ(lr_at(c, 500), 2.0);
  EXPECT_THROW(parse_lr_schedule("exp"), std::exception);
}

}  // namespace
}  // namespace pico::optim
