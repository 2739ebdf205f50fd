// DeMo (optim/demo.h) against the published implementation: tests/fixtures/demo holds a run
// of bloc97/DeMo (torch 1.13, CPU) with world sizes 1 and 2 and weight decay 0 and 0.1;
// README.md beside it gives the semantics and tolerances used here. Two ranks are simulated
// in one process: two DeMo instances prepare() their payloads, and both apply() the pair.
// Then the behaviour the reference does not cover: bad payloads, call order, state, dtypes,
// threads.
#include "pico/optim/demo.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>

#include "h5_read.h"
#include "pico/common/error.h"
#include "support/test_util.h"

namespace pico::optim {
namespace {

const std::vector<std::string> kNames = {"w_128x192", "w_96x40", "v_100"};

torch::Tensor to_tensor(const test::H5Array<float>& a) {
  return torch::from_blob(const_cast<float*>(a.data.data()), a.shape, torch::kFloat32).clone();
}

// max|a − ref| / max|ref|
double rel_err(const float* a, const float* ref, std::int64_t n) {
  double err = 0, mx = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    err = std::max(err, std::fabs(double{a[i]} - ref[i]));
    mx = std::max(mx, std::fabs(double{ref[i]}));
  }
  return mx > 0 ? err / mx : err;
}

bool bitwise_equal(const float* a, const float* b, std::int64_t n) {
  return std::memcmp(a, b, static_cast<std::size_t>(n) * sizeof(float)) == 0;
}

// Stored (…, K) int64 indices and fp32 values as SparseCoeffs, taking columns
// [col0, col0 + k) of rows that are `stride` wide (stride = K for one rank's sparse_idx,
// world·32 for gathered_idx).
SparseCoeffs from_stored(const test::H5Array<std::int64_t>& idx, const test::H5Array<float>& val, std::int64_t stride,
                         std::int64_t col0, std::int64_t k) {
  SparseCoeffs s;
  s.chunks = idx.numel() / stride;
  s.k = k;
  for (std::int64_t ch = 0; ch < s.chunks; ++ch)
    for (std::int64_t j = 0; j < k; ++j) {
      s.idx.push_back(static_cast<std::uint32_t>(idx.data[static_cast<std::size_t>(ch * stride + col0 + j)]));
      s.val.push_back(val.data[static_cast<std::size_t>(ch * stride + col0 + j)]);
    }
  return s;
}

struct Worst {  // max observed error / max|ref| over one run's steps, ranks and parameters
  double encoded = 0, sparse_val = 0, transmit = 0, aggregated = 0, new_grad = 0, delta = 0;
};
Worst g_worst;

void check_reference_run_steps(const std::string& run);

// Every comparison asserts its own tolerance; the worst errors of the run are printed and
// recorded (ctest runs each test in its own process, so a separate "report" test would
// see none of them).
void check_reference_run(const std::string& run) {
  g_worst = Worst{};
  check_reference_run_steps(run);
  std::printf(
      "[demo reference %s] worst error / max|ref|: encoded %.2e, sparse_val %.2e, transmit %.2e, "
      "aggregated %.2e, new_grad %.2e, delta %.2e\n",
      run.c_str(), g_worst.encoded, g_worst.sparse_val, g_worst.transmit, g_worst.aggregated, g_worst.new_grad,
      g_worst.delta);
  ::testing::Test::RecordProperty("worst_new_grad", std::to_string(g_worst.new_grad));
  ::testing::Test::RecordProperty("worst_delta", std::to_string(g_worst.delta));
  // The run was compared at all (a reference file without steps would pass every check).
  EXPECT_GT(g_worst.delta, 0.0) << run << ": no δ was compared";
  EXPECT_GT(g_worst.new_grad + g_worst.aggregated, 0.0) << run << ": no aggregation was compared";
}

void check_reference_run_steps(const std::string& run) {
  test::H5File f(test::test_data("demo/demo_reference.h5"));
  const std::string g = "/" + run;
  const auto world = f.attr<std::int64_t>(g, "world_size")[0];
  DeMoConfig cfg;
  cfg.lr = f.attr<double>(g, "lr")[0];
  cfg.weight_decay = f.attr<double>(g, "weight_decay")[0];
  cfg.compression_decay = f.attr<double>(g, "compression_decay")[0];
  cfg.compression_topk = f.attr<std::int64_t>(g, "compression_topk")[0];
  cfg.compression_chunk = f.attr<std::int64_t>(g, "compression_chunk")[0];
  const auto steps = f.attr<std::int64_t>(g, "steps")[0];
  const float lr_f = static_cast<float>(cfg.lr);
  const float beta_f = static_cast<float>(cfg.compression_decay);

  std::vector<NamedTensors> params(static_cast<std::size_t>(world));
  std::vector<std::unique_ptr<DeMo>> demo;
  for (std::int64_t r = 0; r < world; ++r) {
    for (const auto& name : kNames) {
      auto t = to_tensor(f.read<float>(g + "/init/params/" + name));
      t.set_requires_grad(true);
      params[static_cast<std::size_t>(r)].emplace_back(name, t);
    }
    demo.push_back(std::make_unique<DeMo>(params[static_cast<std::size_t>(r)], cfg));
  }

  // Layout: chunk sizes and coefficient shapes exactly as the reference chose them.
  for (std::size_t i = 0; i < kNames.size(); ++i) {
    const auto& t = demo[0]->transform(i);
    EXPECT_EQ(t.coeff_shape(), f.attr<std::int64_t>(g, "coeff_shape__" + kNames[i])) << kNames[i];
    EXPECT_EQ(t.chunk_numel(), f.attr<std::int64_t>(g, "totalk__" + kNames[i])[0]) << kNames[i];
  }
  // Bytes: the reference sends int64 + fp32 per coefficient; pico uint16 + fp32 + a header.
  EXPECT_EQ(demo[0]->reference_payload_bytes(),
            static_cast<std::size_t>(f.attr<std::int64_t>(g + "/step_1/rank_0", "data_transmit_bytes")[0]));
  EXPECT_EQ(demo[0]->payload_bytes(), 16u + 10u * 32u * (2u + 4u));
  EXPECT_EQ(demo[0]->dense_bytes(), 4u * (128 * 192 + 96 * 40 + 100));

  for (std::int64_t s = 1; s <= steps; ++s) {
    const std::string sg = g + "/step_" + std::to_string(s);
    std::vector<std::vector<std::uint8_t>> payloads;
    for (std::int64_t r = 0; r < world; ++r) {
      const std::string rg = sg + "/rank_" + std::to_string(r);
      const std::string prev = g + "/step_" + std::to_string(s - 1) + "/rank_" + std::to_string(r);
      auto& ps = params[static_cast<std::size_t>(r)];
      auto& opt = *demo[static_cast<std::size_t>(r)];
      for (std::size_t i = 0; i < ps.size(); ++i)
        ps[i].second.mutable_grad() = to_tensor(f.read<float>(rg + "/grad/" + kNames[i]));
      std::vector<torch::Tensor> delta_before;
      for (std::size_t i = 0; i < ps.size(); ++i) delta_before.push_back(opt.state()[i].second.clone());
      payloads.push_back(opt.prepare(cfg.lr));
      ASSERT_EQ(payloads.back().size(), opt.payload_bytes());
      const auto mine = opt.unpack(payloads.back(), static_cast<std::size_t>(r));
      const auto state = opt.state();
      EXPECT_EQ(state.back().first, "step");

      for (std::size_t i = 0; i < ps.size(); ++i) {
        const auto& name = kNames[i];
        const std::string at = run + " step " + std::to_string(s) + " rank " + std::to_string(r) + " " + name;
        const auto& t = opt.transform(i);
        const std::int64_t n = t.numel(), nc = t.chunks() * t.chunk_numel();
        const auto grad = f.read<float>(rg + "/grad/" + name);

        // encoded = DCT(δ_pre) with δ_pre from the stored δ of the previous step (README).
        std::vector<float> dprev(static_cast<std::size_t>(n), 0.0f);
        if (s > 1) dprev = f.read<float>(prev + "/delta/" + name).data;
        std::vector<float> dpre(static_cast<std::size_t>(n)), enc(static_cast<std::size_t>(nc));
        for (std::int64_t j = 0; j < n; ++j) {
          const float decayed = dprev[static_cast<std::size_t>(j)] * beta_f;
          dpre[static_cast<std::size_t>(j)] = std::fmaf(grad.data[static_cast<std::size_t>(j)], lr_f, decayed);
        }
        t.encode(dpre.data(), enc.data());
        const auto ref_enc = f.read<float>(rg + "/encoded/" + name);
        ASSERT_EQ(ref_enc.numel(), nc) << at;
        const double e_enc = rel_err(enc.data(), ref_enc.data.data(), nc);
        EXPECT_LE(e_enc, 1e-6) << at;
        g_worst.encoded = std::max(g_worst.encoded, e_enc);

        // top-k: the same index set per chunk (exact), the values within 1e-6·max.
        const auto ref_idx = f.read<std::int64_t>(rg + "/sparse_idx/" + name);
        const auto ref_val = f.read<float>(rg + "/sparse_val/" + name);
        const std::int64_t k = ref_idx.shape.back();
        ASSERT_EQ(mine[i].k, k) << at;
        ASSERT_EQ(mine[i].chunks, t.chunks()) << at;
        double vmax = 0, verr = 0;
        for (float v : ref_val.data) vmax = std::max(vmax, std::fabs(double{v}));
        for (std::int64_t ch = 0; ch < t.chunks(); ++ch) {
          std::vector<std::pair<std::int64_t, float>> ref_pairs;
          for (std::int64_t j = 0; j < k; ++j)
            ref_pairs.emplace_back(ref_idx.data[static_cast<std::size_t>(ch * k + j)],
                                   ref_val.data[static_cast<std::size_t>(ch * k + j)]);
          std::sort(ref_pairs.begin(), ref_pairs.end());
          for (std::int64_t j = 0; j < k; ++j) {
            const auto m = static_cast<std::size_t>(ch * k + j);
            ASSERT_EQ(static_cast<std::int64_t>(mine[i].idx[m]), ref_pairs[static_cast<std::size_t>(j)].first)
                << at << " chunk " << ch;
            verr = std::max(verr, std::fabs(double{mine[i].val[m]} - ref_pairs[static_cast<std::size_t>(j)].second));
          }
        }
        EXPECT_LE(verr, 1e-6 * vmax) << at;
        g_worst.sparse_val = std::max(g_worst.sparse_val, verr / vmax);

        // local_coeffs from the stored sparse tensors: bitwise.
        const auto ref_local = f.read<float>(rg + "/local_coeffs/" + name);
        std::vector<float> local(static_cast<std::size_t>(nc));
        demo_scatter(from_stored(ref_idx, ref_val, k, 0, k), t.chunk_numel(), local.data());
        EXPECT_TRUE(bitwise_equal(local.data(), ref_local.data.data(), nc)) << at;

        // transmit = decode(own top-k), within 1e-6·max.
        std::vector<float> own(static_cast<std::size_t>(nc)), transmit(static_cast<std::size_t>(n));
        demo_scatter(mine[i], t.chunk_numel(), own.data());
        t.decode(own.data(), transmit.data());
        const auto ref_transmit = f.read<float>(rg + "/transmit/" + name);
        const double e_tr = rel_err(transmit.data(), ref_transmit.data.data(), n);
        EXPECT_LE(e_tr, 1e-6) << at;
        g_worst.transmit = std::max(g_worst.transmit, e_tr);

        // The δ rule, bitwise on this implementation's own numbers:
        // δ = fl(fmaf(g, lr, fl(δ_prev·β)) − transmit).
        const float* before = delta_before[i].data_ptr<float>();
        const float* after = state[i].second.data_ptr<float>();
        ASSERT_EQ(state[i].first, name + ".delta");
        for (std::int64_t j = 0; j < n; ++j) {
          const float decayed = before[j] * beta_f;
          const float pre = std::fmaf(grad.data[static_cast<std::size_t>(j)], lr_f, decayed);
          const float expect = pre - transmit[static_cast<std::size_t>(j)];
          ASSERT_EQ(std::memcmp(&after[j], &expect, 4), 0) << at << " δ[" << j << "]";
        }
        // δ against the reference's, within 1e-5·max.
        const auto ref_delta = f.read<float>(rg + "/delta/" + name);
        const double e_d = rel_err(after, ref_delta.data.data(), n);
        EXPECT_LE(e_d, 1e-5) << at;
        g_worst.delta = std::max(g_worst.delta, e_d);
      }
    }

    // Aggregation: bitwise from the stored gathered tensors; within 1e-6 from our payloads.
    const auto aggregated = demo[0]->aggregate(payloads);
    for (std::size_t i = 0; i < kNames.size(); ++i) {
      const auto& name = kNames[i];
      const std::string at = run + " step " + std::to_string(s) + " " + name;
      const auto& t = demo[0]->transform(i);
      const std::int64_t nc = t.chunks() * t.chunk_numel();
      const auto gidx = f.read<std::int64_t>(sg + "/gathered_idx/" + name);
      const auto gval = f.read<float>(sg + "/gathered_val/" + name);
      const auto ref_agg = f.read<float>(sg + "/aggregated_coeffs/" + name);
      const std::int64_t stride = gidx.shape.back(), k = stride / world;
      std::vector<SparseCoeffs> ranks;
      for (std::int64_t r = 0; r < world; ++r) ranks.push_back(from_stored(gidx, gval, stride, r * k, k));
      std::vector<const SparseCoeffs*> rp;
      for (const auto& x : ranks) rp.push_back(&x);
      std::vector<float> agg(static_cast<std::size_t>(nc));
      demo_aggregate(rp, t.chunk_numel(), agg.data());
      EXPECT_TRUE(bitwise_equal(agg.data(), ref_agg.data.data(), nc)) << at;

      const float* mine = aggregated[i].data_ptr<float>();
      EXPECT_EQ(aggregated[i].sizes().vec(), t.coeff_shape()) << at;
      const double e_agg = rel_err(mine, ref_agg.data.data(), nc);
      EXPECT_LE(e_agg, 1e-6) << at;
      g_worst.aggregated = std::max(g_worst.aggregated, e_agg);
      std::vector<float> new_grad(static_cast<std::size_t>(t.numel()));
      t.decode(mine, new_grad.data());
      const auto ref_ng = f.read<float>(sg + "/new_grad/" + name);
      const double e_ng = rel_err(new_grad.data(), ref_ng.data.data(), t.numel());
      EXPECT_LE(e_ng, 1e-6) << at;
      g_worst.new_grad = std::max(g_worst.new_grad, e_ng);
    }

    // apply(): exact signs in p.grad and bitwise parameters on every rank.
    for (std::int64_t r = 0; r < world; ++r) {
      auto& opt = *demo[static_cast<std::size_t>(r)];
      opt.apply(payloads, cfg.lr);
      EXPECT_EQ(opt.step_count(), s);
      EXPECT_FALSE(opt.pending());
      const std::string rg = sg + "/rank_" + std::to_string(r);
      for (std::size_t i = 0; i < kNames.size(); ++i) {
        const std::string at = run + " step " + std::to_string(s) + " rank " + std::to_string(r) + " " + kNames[i];
        const auto& p = params[static_cast<std::size_t>(r)][i].second;
        const auto sign = f.read<std::int8_t>(sg + "/update_sign/" + kNames[i]);
        const float* gp = p.grad().data_ptr<float>();
        std::int64_t flips = 0;
        for (std::int64_t j = 0; j < p.numel(); ++j)
          flips += static_cast<std::int8_t>(gp[j]) != sign.data[static_cast<std::size_t>(j)];
        EXPECT_EQ(flips, 0) << at << ": sign mismatches";
        const auto ref_p = f.read<float>(rg + "/params/" + kNames[i]);
        EXPECT_TRUE(bitwise_equal(p.data_ptr<float>(), ref_p.data.data(), p.numel())) << at << ": parameters differ";
      }
    }
  }
}

TEST(DeMoReference, WorldSize1) {
  check_reference_run("ws1");
}
TEST(DeMoReference, WorldSize2) {
  check_reference_run("ws2");
}
TEST(DeMoReference, WorldSize2WithWeightDecay) {
  check_reference_run("ws2_wd");
}
// ---- behaviour beyond the reference ------------------------------------------------------

NamedTensors small_model(unsigned seed, torch::ScalarType dtype = torch::kFloat32) {
  torch::manual_seed(seed);
  NamedTensors p = {{"w", torch::randn({24, 40}).to(dtype)}, {"b", torch::randn({40}).to(dtype)}};
  for (auto& [n, t] : p) t.set_requires_grad(true);
  return p;
}

void set_grads(NamedTensors& p, unsigned seed) {
  torch::manual_seed(seed);
  for (auto& [n, t] : p) t.mutable_grad() = torch::randn(t.sizes()).to(t.scalar_type());
}

NamedTensors clone_params(const NamedTensors& p) {
  NamedTensors out;
  for (const auto& [n, t] : p) out.emplace_back(n, t.detach().clone().set_requires_grad(true));
  return out;
}

DeMoConfig small_config() {
  DeMoConfig c;
  c.lr = 1e-3;
  c.compression_topk = 5;
  c.compression_chunk = 8;
  return c;
}

TEST(DeMo, ConfigValidateNamesTheKey) {
  const std::pair<const char*, DeMoConfig (*)()> bad[] = {
      {"demo.lr",
       [] {
         DeMoConfig c;
         c.lr = -1;
         return c;
       }},
      {"demo.compression_decay",
       [] {
         DeMoConfig c;
         c.compression_decay = 1.0;
         return c;
       }},
      {"demo.compression_topk",
       [] {
         DeMoConfig c;
         c.compression_topk = 0;
         return c;
       }},
      {"demo.compression_chunk",
       [] {
         DeMoConfig c;
         c.compression_chunk = 0;
         return c;
       }},
      {"demo.weight_decay",
       [] {
         DeMoConfig c;
         c.weight_decay = NAN;
         return c;
       }},
  };
  for (const auto& [key, make] : bad) {
    try {
      make().validate();
      ADD_FAILURE() << key << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(DeMoConfig{}.validate());
}

TEST(DeMo, AggregateIsTheMeanOverTheRanksThatChoseAnIndex) {
  // chunk of 6 coefficients, k = 2, three ranks
  SparseCoeffs a{1, 2, {0, 3}, {1.0f, 2.0f}}, b{1, 2, {3, 5}, {4.0f, -1.0f}}, c{1, 2, {0, 3}, {0.5f, 0.25f}};
  std::vector<float> out(6, 9.0f);
  demo_aggregate({&a, &b, &c}, 6, out.data());
  const float at3 = (2.0f + 4.0f + 0.25f) / 3.0f;
  EXPECT_EQ(out, (std::vector<float>{0.75f, 0.0f, 0.0f, at3, 0.0f, -1.0f}));
}

TEST(DeMo, TopKKeepsTheLargestMagnitudesPerChunk) {
  const std::vector<float> c = {0.1f, -5, 3, 3, /* chunk 2 */ 0, 0, -0.5f, 0.25f};
  const auto s = demo_topk(c.data(), 2, 4, 2);
  EXPECT_EQ(s.idx, (std::vector<std::uint32_t>{1, 2, 2, 3}));  // tie 3/3 → lower index
  EXPECT_EQ(s.val, (std::vector<float>{-5, 3, -0.5f, 0.25f}));
  const auto all = demo_topk(c.data(), 2, 4, 99);  // clamped to the chunk
  EXPECT_EQ(all.k, 4);
  const std::vector<float> bad = {1, NAN, 0, 0};
  EXPECT_THROW(demo_topk(bad.data(), 1, 4, 2), Error);
}

TEST(DeMo, RejectsBadPayloadsAndChangesNothing) {
  auto p0 = small_model(1), p1 = clone_params(p0);
  DeMo a(p0, small_config()), b(p1, small_config());
  set_grads(p0, 10);
  set_grads(p1, 11);
  const auto pa = a.prepare(1e-3), pb = b.prepare(1e-3);
  const auto before = p0[0].second.detach().clone();
  // layout: w (24, 40) → 8×8 chunks: 3×5 = 15 chunks; b (40) → 5 chunks; k = 5, uint16 indices
  ASSERT_EQ(a.payload_bytes(), 16u + 20u * 5u * 6u);
  const std::size_t values = 16 + 20 * 5 * 2;
  auto expect_bad = [&](std::vector<std::uint8_t> bad, const char* what) {
    try {
      a.apply({pa, bad}, 1e-3);
      ADD_FAILURE() << what << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << what << ": " << e.what();
      EXPECT_FALSE(e.hint().empty());
    }
    EXPECT_TRUE(torch::equal(p0[0].second, before)) << what;
    EXPECT_TRUE(a.pending()) << what;
    EXPECT_EQ(a.step_count(), 0) << what;
  };
  expect_bad({}, "empty");
  expect_bad(std::vector<std::uint8_t>(pb.begin(), pb.end() - 1), "truncated");
  auto longer = pb;
  longer.push_back(0);
  expect_bad(longer, "too long");
  auto p = pb;
  p[0] = 'X';
  expect_bad(p, "bad magic");
  p = pb;
  p[4] = 9;
  expect_bad(p, "version");
  p = pb;
  p[8] ^= 0xff;
  expect_bad(p, "layout tag");
  p = pb;
  const std::uint16_t out_of_range = 64;  // chunks of w have 64 coefficients
  std::memcpy(p.data() + 16, &out_of_range, 2);
  expect_bad(p, "index out of range");
  p = pb;
  std::memcpy(p.data() + 18, p.data() + 16, 2);  // second index = first
  expect_bad(p, "duplicate index");
  p = pb;
  const float inf = INFINITY;
  std::memcpy(p.data() + values + 4 * 7, &inf, 4);
  expect_bad(p, "infinite value");
  DeMoConfig other = small_config();
  other.compression_topk = 4;
  auto p2 = clone_params(p0);
  set_grads(p2, 12);
  DeMo c(p2, other);
  EXPECT_THROW(a.apply({pa, c.prepare(1e-3)}, 1e-3), Error);
  // random corruption: either a clean pico::Error or (a flip inside a value) a valid payload
  std::mt19937 rng(17);
  int rejected = 0;
  for (int trial = 0; trial < 300; ++trial) {
    auto q = pb;
    for (int flips = 0; flips < 3; ++flips) q[rng() % q.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
    if (trial % 50 == 0) q.resize(rng() % q.size());
    try {
      (void)a.unpack(q, 1);
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_TRUE(a.pending());
  // the good pair still goes through afterwards
  a.apply({pa, pb}, 1e-3);
  b.apply({pa, pb}, 1e-3);
  EXPECT_TRUE(torch::equal(p0[0].second, p1[0].second));
  EXPECT_FALSE(torch::equal(p0[0].second, before));
  EXPECT_THROW(a.aggregate({}), Error);
}

TEST(DeMo, CallOrderAndGradientsAreChecked) {
  auto p = small_model(2);
  DeMo d(p, small_config());
  EXPECT_THROW(d.apply({}, 1e-3), Error);  // no prepare
  EXPECT_THROW(d.prepare(1e-3), Error);    // no gradients
  set_grads(p, 3);
  p[1].second.mutable_grad().view(-1)[7] = NAN;
  try {
    d.prepare(1e-3);
    FAIL() << "NaN gradient accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gradient of b"), std::string::npos) << e.what();
  }
  for (const auto& [n, t] : d.state()) {
    if (n == "step") continue;
    EXPECT_EQ(t.abs().sum().item<float>(), 0.0f) << n << " changed by a rejected prepare";
  }
  EXPECT_FALSE(d.pending());
  set_grads(p, 3);
  const auto payload = d.prepare(1e-3);
  EXPECT_THROW(d.prepare(1e-3), Error);  // twice
  d.apply({payload}, 1e-3);
  EXPECT_EQ(d.step_count(), 1);
  // parameters DeMo cannot handle
  EXPECT_THROW(DeMo({{"conv", torch::zeros({2, 3, 4})}}, {}), Error);
  EXPECT_THROW(DeMo({{"ids", torch::zeros({4}, torch::kInt64)}}, {}), Error);
}

TEST(DeMo, EveryElementMovesByLrAndWeightDecayComesFirst) {
  auto p = small_model(4);
  const auto p0 = p[0].second.detach().clone();
  DeMoConfig cfg = small_config();
  cfg.weight_decay = 0.1;
  DeMo d(p, cfg);
  set_grads(p, 5);
  d.apply({d.prepare(2e-3)}, 2e-3);
  const auto sign = p[0].second.grad();
  EXPECT_TRUE((sign.abs() == 1).all().item<bool>());  // no exact zeros here
  const float factor = static_cast<float>(1.0 - 2e-3 * 0.1);
  const auto expect = (p0 * factor) - sign * 2e-3f;
  EXPECT_TRUE(torch::equal(p[0].second.detach(), expect));
}

TEST(DeMo, ResumeFromStateMatchesTheUninterruptedRun) {
  auto pa = small_model(6), pb = clone_params(pa);
  DeMo a(pa, small_config()), b(pb, small_config());
  for (unsigned s = 0; s < 2; ++s) {
    set_grads(pa, 20 + s);
    set_grads(pb, 20 + s);
    a.apply({a.prepare(1e-3)}, 1e-3);
    b.apply({b.prepare(1e-3)}, 1e-3);
  }
  // "restart" b: new parameters from its values, new optimizer from its state
  auto pc = clone_params(pb);
  DeMo c(pc, small_config());
  c.load_state(b.state());
  EXPECT_EQ(c.step_count(), 2);
  set_grads(pa, 30);
  set_grads(pc, 30);
  a.apply({a.prepare(1e-3)}, 1e-3);
  c.apply({c.prepare(1e-3)}, 1e-3);
  for (std::size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i].second, pc[i].second)) << pa[i].first;
    EXPECT_TRUE(torch::equal(a.state()[i].second, c.state()[i].second)) << pa[i].first;
  }
  // bad state is rejected without changes
  auto st = a.state();
  st[0].second = torch::zeros({3});
  EXPECT_THROW(c.load_state(st), Error);
  st = a.state();
  st.pop_back();
  EXPECT_THROW(c.load_state(st), Error);
  EXPECT_TRUE(torch::equal(a.state()[0].second, c.state()[0].second));
}

TEST(DeMo, Bf16ParametersGetTheSameSigns) {
  // With bf16-representable gradients, δ and the signs do not depend on the parameter dtype;
  // the bf16 update is the fp32 step rounded to bf16.
  auto pf = small_model(7);
  NamedTensors pb;
  for (const auto& [n, t] : pf) pb.emplace_back(n, t.detach().to(torch::kBFloat16).set_requires_grad(true));
  const auto pb0 = pb[0].second.detach().clone();
  DeMo f(pf, small_config()), b(pb, small_config());
  set_grads(pb, 8);  // bf16 grads
  for (std::size_t i = 0; i < pf.size(); ++i) pf[i].second.mutable_grad() = pb[i].second.grad().to(torch::kFloat32);
  f.apply({f.prepare(1e-3)}, 1e-3);
  b.apply({b.prepare(1e-3)}, 1e-3);
  for (std::size_t i = 0; i < pf.size(); ++i) {
    EXPECT_TRUE(torch::equal(f.state()[i].second, b.state()[i].second)) << pf[i].first;
    EXPECT_TRUE(torch::equal(pf[i].second.grad(), pb[i].second.grad().to(torch::kFloat32))) << pf[i].first;
  }
  const auto expect = (pb0.to(torch::kFloat32) - pf[0].second.grad() * 1e-3f).to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(pb[0].second.detach(), expect));
}

TEST(DeMo, ThreadCountDoesNotChangeTheBits) {
  std::vector<std::vector<torch::Tensor>> results;
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    torch::manual_seed(3);
    // large enough for the parallel transforms (2^20 elements)
    NamedTensors p0 = {{"w", torch::randn({1024, 1024}).set_requires_grad(true)},
                       {"v", torch::randn({64}).set_requires_grad(true)}};
    auto p1 = clone_params(p0);
    DeMo a(p0, {}), b(p1, {});
    for (unsigned s = 0; s < 2; ++s) {
      set_grads(p0, 40 + s);
      set_grads(p1, 50 + s);
      const auto pa = a.prepare(1e-3), pb = b.prepare(1e-3);
      a.apply({pa, pb}, 1e-3);
      b.apply({pa, pb}, 1e-3);
    }
    EXPECT_TRUE(torch::equal(p0[0].second, p1[0].second));
    EXPECT_TRUE(torch::equal(p0[1].second, p1[1].second));
    results.push_back({p0[0].second.detach().clone(), a.state()[0].second.clone(), p0[1].second.detach().clone(),
                       a.state()[1].second.clone()});
  }
  at::set_num_threads(2);
  for (std::size_t i = 0; i < results[0].size(); ++i) EXPECT_TRUE(torch::equal(results[0][i], results[1][i])) << i;
}

TEST(DeMo, WideChunksUseUInt32Indices) {
  // A 300 × 300 chunk has 90000 coefficients: more than uint16 can index.
  DeMoConfig cfg;
  cfg.compression_chunk = 300;
  NamedTensors p = {{"w", torch::randn({300, 300}).set_requires_grad(true)}};
  DeMo d(p, cfg);
  EXPECT_EQ(d.payload_bytes(), 16u + 32u * (4u + 4u));
  set_grads(p, 9);
  const auto payload = d.prepare(1e-3);
  EXPECT_EQ(payload[6], 4);
  const auto s = d.unpack(payload, 0);
  EXPECT_GT(*std::max_element(s[0].idx.begin(), s[0].idx.end()), 65535u);  // needs the 4 bytes
  d.apply({payload}, 1e-3);
}

}  // namespace
}  // namespace pico::optim

namespace pico::optim {
namespace {

TEST(DeMo, HalfPrecisionValuesHalveTheValueBytesAndKeepTheSigns) {
  // The same model and gradients through fp32 and fp16 coefficient values: fp16 payloads are
  // (2 + 2) / (2 + 4) of fp32's (uint16 indices), error feedback subtracts the rounded
  // values that were sent, and the update directions agree except at the smallest-magnitude
  // elements (fp16 keeps 11 significant bits of each coefficient).
  torch::manual_seed(5);
  NamedTensors base = {{"w", torch::randn({64, 96})}, {"v", torch::randn({100})}};
  auto clone = [&] {
    NamedTensors out;
    for (const auto& [n, t] : base) out.emplace_back(n, t.clone().set_requires_grad(true));
    return out;
  };
  NamedTensors p32 = clone(), p16 = clone();
  DeMoConfig c32;
  c32.lr = 1e-3;
  DeMoConfig c16 = c32;
  c16.value_dtype = WireDtype::kFloat16;
  DeMo d32(p32, c32), d16(p16, c16);
  const std::size_t header = 16;
  EXPECT_EQ((d16.payload_bytes() - header) * 6, (d32.payload_bytes() - header) * 4);
  double agree = 0, total = 0;
  for (int step = 0; step < 3; ++step) {
    for (std::size_t i = 0; i < base.size(); ++i) {
      const auto g = torch::randn(base[i].second.sizes());
      p32[i].second.mutable_grad() = g.clone();
      p16[i].second.mutable_grad() = g.clone();
    }
    const auto a = d32.prepare(1e-3), b = d16.prepare(1e-3);
    d32.apply({a}, 1e-3);
    d16.apply({b}, 1e-3);
    for (std::size_t i = 0; i < base.size(); ++i) {
      agree += (p32[i].second.grad() == p16[i].second.grad()).sum().item<double>();
      total += static_cast<double>(p32[i].second.numel());
    }
    // What fp16 sent decodes to fp16-representable values only.
    const auto coeffs = d16.unpack(b, 0);
    for (const auto& s : coeffs)
      for (float v : s.val) ASSERT_EQ(v, half_to_float(float_to_half(v)));
  }
  EXPECT_GT(agree / total, 0.99) << "signs agreeing: " << agree / total;
  // A payload of the other value type is refused with a clear reason.
  DeMo other(clone(), c32);
  torch::NoGradGuard g;
  try {
    other.unpack(std::vector<std::uint8_t>(d16.payload_bytes()), 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bytes, expected"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pico::optim
