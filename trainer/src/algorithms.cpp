#include "algorithms.h"

#include <chrono>
#include <cmath>
#include <vector>

#include "pico/common/codec.h"
#include "pico/common/error.h"

namespace pico::trainer {
namespace {




// Throws a pico::Error that says which collective failed and why.
void check(const comm::CollectiveResult& r, const char* what, std::int64_t step) {
  if (r.ok()) return;
  throw Error(str(what, " failed at step ", step + 1, ": ", comm::to_string(r.status), " — ", r.error),
              "a contributor died, stalled or disagrees; restart the run with --resume (outer.timeout_s sets how long "
              "to wait)");
}

class Ddp final : public Algorithm {
 public:
  Ddp(const RunConfig& cfg, Contributor& c, comm::Communicator& comm, std::mutex& mu)
      : c_(c), comm_(comm), mu_(mu), flat_(static_cast<std::size_t>(c.numel())) {
    opts_.wire = parse_wire_dtype(cfg.outer.compression);
    opts_.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(cfg.outer.timeout_s * 1000));
  }

  StepReport step(std::int64_t step) override {
    StepReport rep;
    double loss;
    {
      std::lock_guard<std::mutex> lock(mu_);
      loss = c_.forward_backward(step);
      if (comm_.world_size() > 1) c_.grads_to(flat_.data());
    }
    if (comm_.world_size() > 1) {
      opts_.tag = static_cast<std::uint64_t>(step);
      const auto r = comm_.all_reduce(flat_.data(), flat_.size(), opts_);
      check(r, "the gradient all-reduce", step);
      bytes_sent_ += r.bytes_sent;
      bytes_received_ += r.bytes_received;
      rep.comm_s = r.seconds;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (comm_.world_size() > 1) c_.grads_from(flat_.data(), 1.0f / static_cast<float>(comm_.world_size()));
    rep.inner = c_.optimizer_step(step, loss);
    return rep;
  }

 private:
  Contributor& c_;
  comm::Communicator& comm_;
  std::mutex& mu_;
  std::vector<float> flat_;  // (numel) gradient, summed in place
  comm::AllreduceOptions opts_;
};

}  // namespace

std::unique_ptr<Algorithm> make_algorithm(const RunConfig& cfg, Contributor& contributor, comm::Communicator& comm,
                                          std::mutex& compute_mu) {
  if (cfg.outer.algorithm == "ddp") return std::make_unique<Ddp>(cfg, contributor, comm, compute_mu);
  throw Error(str("outer.algorithm '", cfg.outer.algorithm, "' is not available in this build"), "use ddp");
}

}  // namespace pico::trainer
