// bench_inner — times pico's inner training loop (Contributor::train_step: forward,
// backward, clipping, AdamW) on the CPU, and optionally where the time goes.
//
// Not a test and not part of `pico`: experiments/inner_throughput/run.sh runs it beside
// the PyTorch eager reference (bench_torch.py) and writes RESULTS.md. Prints one JSON
// object on stdout.
//
//   pico_bench_inner --config small.yaml --set data.path=DIR [--steps 20] [--warmup 3]
//                    [--profile-steps 5] [--peak] [--ops REPEATS] [--gemm-shapes REPEATS]
//                    [--threads N]
//   pico_bench_inner --peak            sgemm GFLOP/s only
//   pico_bench_inner --print-cpu-env   the environment pico would give itself
#include <ATen/record_function.h>
#include <time.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pico/common/blas.h"
#include "pico/common/cpu_env.h"
#include "pico/common/error.h"
#include "pico/data/manifest.h"
#include "pico/models/ops.h"
#include "pico/trainer/config_io.h"
#include "pico/trainer/contributor.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
// CPU time of the whole process (all threads): with one thread, the work without the time
// spent descheduled by other processes on a shared machine.
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Self time per operator (time inside it minus time inside nested operators), split by
// whether it ran inside an autograd backward node. Main thread only: LibTorch's CPU
// backward runs on the calling thread, and intra-op workers record no scopes.
struct Frame {
  const char* name;
  Clock::time_point start;
  double child_s;
  bool backward;
};
thread_local std::vector<Frame> t_stack;
std::map<std::string, double> g_self_fwd, g_self_bwd, g_self_opt;
bool g_in_optimizer = false;
std::map<std::string, std::int64_t> g_calls;

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  const bool bwd = fn.scope() == at::RecordScope::BACKWARD_FUNCTION || (!t_stack.empty() && t_stack.back().backward);
  t_stack.push_back({fn.name(), Clock::now(), 0.0, bwd});
  return nullptr;
}

void on_exit(const at::RecordFunction& /*fn*/, at::ObserverContext* /*ctx*/) {
  if (t_stack.empty()) return;
  const Frame f = t_stack.back();
  t_stack.pop_back();
  const double total = seconds(f.start, Clock::now());
  (f.backward ? g_self_bwd : g_in_optimizer ? g_self_opt : g_self_fwd)[f.name] += total - f.child_s;
  ++g_calls[f.name];
  if (!t_stack.empty()) t_stack.back().child_s += total;
}

double median(std::vector<double> v);

// GFLOP/s of repeated (n × n) · (n × n) sgemms, {best, median}: through LibTorch (→ the
// system BLAS, as PyTorch runs it), or through pico's linear op (oneDNN's sgemm where
// available). The best is the peak; the median is what a busy machine sustains.
std::pair<double, double> sgemm_gflops(std::int64_t n, int repeats, bool via_pico) {
  torch::NoGradGuard g;
  auto a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
  auto once = [&] {
    if (via_pico)
      c = pico::models::ops::linear(a, b);
    else
      torch::mm_out(c, a, b);
  };
  once();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    once();
    t.push_back(seconds(t0, Clock::now()));
  }
  const double flop = 2.0 * static_cast<double>(n * n * n);
  return {flop / *std::min_element(t.begin(), t.end()) / 1e9, flop / median(t) / 1e9};
}

// Forward + backward time of each fused op against its plain-torch reference, at the
// shapes of `cfg` with `tokens` tokens: where the non-GEMM time went, op by op.
nlohmann::json bench_ops(const pico::models::ModelConfig& cfg, std::int64_t batch, int repeats) {
  namespace ops = pico::models::ops;
  const std::int64_t T = cfg.max_seq_len, C = cfg.d_model, hd = cfg.head_dim();
  const std::int64_t H = cfg.attention_n_heads, KV = cfg.attention_n_kv_heads;
  const std::int64_t N = batch * T;
  auto leaf = [](std::vector<std::int64_t> shape, double scale = 1.0) {
    return (torch::randn(shape) * scale).requires_grad_(true);
  };
  auto cos = torch::randn({T, hd}), sin = torch::randn({T, hd});
  auto targets = torch::randint(0, cfg.vocab_size, {N}, torch::kLong);
  struct Case {
    std::string name;
    std::function<torch::Tensor()> run;
  };
  auto x = leaf({N, C}), w = leaf({C});
  auto ab = leaf({N, 2 * cfg.activation_hidden_dim});
  auto qkv = leaf({batch, T, (H + 2 * KV) * hd});
  auto hid = leaf({N, C}), wout = leaf({cfg.vocab_size, C}, 0.05);
  std::vector<Case> cases = {
      {"rms_norm", [&] { return ops::rms_norm(x, w, 1e-6); }},
      {"swiglu", [&] { return ops::swiglu(ab); }},
      {"causal_attention", [&] { return ops::causal_attention(qkv, cos, sin, H, KV); }},
      {"linear_cross_entropy", [&] { return ops::linear_cross_entropy(hid, wout, targets); }},
  };
  nlohmann::json out = nlohmann::json::object();
  const char* only = std::getenv("BENCH_OPS_ONLY");  // e.g. causal_attention (for perf record)
  for (const auto& c : cases) {
    if (only != nullptr && c.name != only) continue;
    for (bool fused : {true, false}) {
      ops::set_fused_kernels_enabled(fused);
      std::vector<double> fwd, bwd, fwd_cpu, bwd_cpu;
      for (int i = 0; i < repeats + 1; ++i) {
        const double c0 = cpu_seconds();
        const auto t0 = Clock::now();
        auto y = c.run();
        const double c1 = cpu_seconds();
        const auto t1 = Clock::now();
        y.backward(torch::ones_like(y));
        const double c2 = cpu_seconds();
        const auto t2 = Clock::now();
        if (i > 0) {
          fwd.push_back(seconds(t0, t1));
          bwd.push_back(seconds(t1, t2));
          fwd_cpu.push_back(c1 - c0);
          bwd_cpu.push_back(c2 - c1);
        }
      }
      out[c.name][fused ? "fused" : "reference"] = {{"forward_s", median(fwd)},
                                                    {"backward_s", median(bwd)},
                                                    {"forward_min_s", *std::min_element(fwd.begin(), fwd.end())},
                                                    {"backward_min_s", *std::min_element(bwd.begin(), bwd.end())},
                                                    {"forward_cpu_s", median(fwd_cpu)},
                                                    {"backward_cpu_s", median(bwd_cpu)}};
    }
  }
  ops::set_fused_kernels_enabled(true);
  return out;
}

// Each projection of the model alone, at the step's shapes (N = batch·T rows): its forward
// product, then its backward pass (the two products dx = dy·w and dw = dyᵀ·x) through
// pico's linear op, GFLOP/s best and median of `repeats`, alternating with a 2048² square
// product through the same op. Shows whether any shape runs below the square's rate in
// isolation (the in-step rate is in the profile).
nlohmann::json bench_gemm_shapes(const pico::models::ModelConfig& cfg, std::int64_t batch, int repeats) {
  namespace ops = pico::models::ops;
  const std::int64_t N = batch * cfg.max_seq_len, C = cfg.d_model, hd = cfg.head_dim();
  const std::int64_t H = cfg.attention_n_heads, KV = cfg.attention_n_kv_heads, F = cfg.activation_hidden_dim;
  struct Proj {
    std::string name;
    std::int64_t in, out;
  };
  const std::vector<Proj> projs = {
      {"q|k|v", C, (H + 2 * KV) * hd}, {"o_proj", H * hd, C}, {"w_0|w_1", C, 2 * F}, {"w_2", F, C}};
  auto sq_a = torch::randn({2048, 2048}), sq_b = torch::randn({2048, 2048});
  std::vector<double> sq_t;
  nlohmann::json out = nlohmann::json::object();
  for (const auto& p : projs) {
    auto x = torch::randn({N, p.in}).requires_grad_(true);
    auto w = (torch::randn({p.out, p.in}) * 0.05).requires_grad_(true);
    std::vector<double> fwd, bwd;
    for (int i = 0; i < repeats + 1; ++i) {
      {
        torch::NoGradGuard g;
        const auto t0 = Clock::now();
        auto c = ops::linear(sq_a, sq_b);
        if (i > 0) sq_t.push_back(seconds(t0, Clock::now()));
      }
      x.mutable_grad() = torch::Tensor();
      w.mutable_grad() = torch::Tensor();
      const auto t0 = Clock::now();
      auto y = ops::linear(x, w);
      const auto t1 = Clock::now();
      y.backward(torch::ones_like(y));
      const auto t2 = Clock::now();
      if (i > 0) {
        fwd.push_back(seconds(t0, t1));
        bwd.push_back(seconds(t1, t2));
      }
    }
    const double flop = 2.0 * static_cast<double>(N * p.in * p.out);
    out[p.name] = {{"m", N},
                   {"k", p.in},
                   {"n", p.out},
                   {"forward_gflops", flop / *std::min_element(fwd.begin(), fwd.end()) / 1e9},
                   {"forward_gflops_median", flop / median(fwd) / 1e9},
                   {"backward_gflops", 2 * flop / *std::min_element(bwd.begin(), bwd.end()) / 1e9},
                   {"backward_gflops_median", 2 * flop / median(bwd) / 1e9}};
  }
  const double sq_flop = 2.0 * 2048.0 * 2048.0 * 2048.0;
  out["square_2048"] = {{"gflops", sq_flop / *std::min_element(sq_t.begin(), sq_t.end()) / 1e9},
                        {"gflops_median", sq_flop / median(sq_t) / 1e9}};
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n == 0 ? 0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

int run(int argc, char** argv) {
  std::string config;
  std::vector<std::string> overrides;
  int steps = 20, warmup = 3, profile_steps = 0, threads = 0;
  bool peak = false;
  int ops_repeats = 0, gemm_repeats = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc)
        throw pico::Error(pico::str(a, " needs a value"), "see the usage at the top of bench_inner.cpp");
      return argv[++i];
    };
    if (a == "--config")
      config = next();
    else if (a == "--set")
      overrides.push_back(next());
    else if (a == "--steps")
      steps = std::stoi(next());
    else if (a == "--warmup")
      warmup = std::stoi(next());
    else if (a == "--profile-steps")
      profile_steps = std::stoi(next());
    else if (a == "--threads")
      threads = std::stoi(next());
    else if (a == "--peak")
      peak = true;

    else if (a == "--ops")
      ops_repeats = std::stoi(next());
    else if (a == "--gemm-shapes")
      gemm_repeats = std::stoi(next());
    else
      throw pico::Error(pico::str("unknown argument '", a, "'"), "see the usage at the top of bench_inner.cpp");
  }
  nlohmann::json out;
  torch::set_num_threads(threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  out["threads"] = torch::get_num_threads();
  const auto blas = pico::detect_blas();
  out["blas"] = blas.name + " (" + blas.detail + ")";
  if (peak) {
    nlohmann::json best, sustained;
    for (const bool via_pico : {false, true})
      for (const std::int64_t n : {1024, 2048}) {
        const auto [b, m] = sgemm_gflops(n, n == 1024 ? 16 : 6, via_pico);
        const std::string key = std::string(via_pico ? "pico_" : "blas_") + std::to_string(n);
        best[key] = b;
        sustained[key] = m;
      }
    out["sgemm_gflops"] = best;
    out["sgemm_gflops_median"] = sustained;
    if (config.empty()) {
      std::cout << out.dump() << std::endl;
      return 0;
    }
  }
  const auto cfg = pico::trainer::load_run_config(config, overrides);
  out["cpu_kernels"] = pico::models::ops::cpu_kernel_isa();
  if (gemm_repeats > 0) out["gemm_shapes"] = bench_gemm_shapes(cfg.model, cfg.data.batch_size, gemm_repeats);
  if (ops_repeats > 0 || gemm_repeats > 0) {
    if (ops_repeats > 0) out["ops"] = bench_ops(cfg.model, cfg.data.batch_size, ops_repeats);
    if (steps == 0 && profile_steps == 0) {
      std::cout << out.dump() << std::endl;
      return 0;
    }
  }
  auto dataset = pico::data::Dataset::open(cfg.data.path, /*verify=*/false);
  pico::trainer::Contributor c(cfg, dataset, torch::Device(torch::kCPU));
  out["num_params"] = cfg.model.num_params();
  out["vocab_size"] = cfg.model.vocab_size;
  out["flops_per_token"] = cfg.model.train_flops_per_token(cfg.model.max_seq_len);
  // The part of it in the projections (what goes through sgemm; the rest is attention's
  // score and value products, inside the fused attention kernel).
  out["matmul_flops_per_token"] =
      cfg.model.train_flops_per_token(cfg.model.max_seq_len) -
      12.0 * static_cast<double>(cfg.model.n_layers * cfg.model.max_seq_len * cfg.model.d_model);
  out["tokens_per_step"] = c.tokens_per_step();
  out["gemm"] = std::getenv("PICO_GEMM") != nullptr ? std::getenv("PICO_GEMM") : "auto";
  std::int64_t step = 0;
  for (int i = 0; i < warmup; ++i) c.train_step(step++);
  std::vector<double> step_s, fb_s, opt_s, losses;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = Clock::now();
    const double loss = c.forward_backward(step);
    const auto t1 = Clock::now();
    c.optimizer_step(step++, loss);
    const auto t2 = Clock::now();
    fb_s.push_back(seconds(t0, t1));
    opt_s.push_back(seconds(t1, t2));
    step_s.push_back(seconds(t0, t2));
    losses.push_back(loss);
  }
  if (steps > 0) {
    out["step_s"] = step_s;
    out["forward_backward_s"] = median(fb_s);
    out["optimizer_s"] = median(opt_s);
    out["loss_first"] = losses.front();
    out["loss_last"] = losses.back();
    out["tok_per_s"] = static_cast<double>(c.tokens_per_step()) / median(step_s);
  }
  if (profile_steps > 0) {
    auto handle = at::addGlobalCallback(at::RecordFunctionCallback(on_enter, on_exit).needsInputs(false));
    const auto t0 = Clock::now();
    for (int i = 0; i < profile_steps; ++i) {
      const double loss = c.forward_backward(step);
      g_in_optimizer = true;
      c.optimizer_step(step++, loss);
      g_in_optimizer = false;
    }
    const double total = seconds(t0, Clock::now());
    at::removeCallback(handle);
    nlohmann::json ops = nlohmann::json::object();
    double recorded = 0;
    for (auto* m : {&g_self_fwd, &g_self_bwd, &g_self_opt}) {
      const char* phase = m == &g_self_fwd ? "forward" : m == &g_self_bwd ? "backward" : "optimizer";
      for (const auto& [name, s] : *m) {
        ops[std::string(phase) + " " + name] = s / profile_steps;
        recorded += s;
      }
    }
    out["profile"] = {
        {"step_s", total / profile_steps}, {"unrecorded_s", (total - recorded) / profile_steps}, {"self_s", ops}};
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--print-cpu-env") {
    // What pico sets for itself at start-up (pico/common/cpu_env.h), as shell exports.
    for (const auto& [name, value] : pico::wanted_cpu_environment())
      std::cout << "export " << name << "=" << value << "\n";
    return 0;
  }
  pico::ensure_cpu_environment(argv);
  try {
    return run(argc, argv);
  } catch (const pico::Error& e) {
    std::fprintf(stderr, "error: %s\nHINT: %s\n", e.what(), e.hint().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}
