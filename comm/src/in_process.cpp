#include "pico/comm/in_process.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include "pico/comm/ring.h"
#include "pico/common/error.h"

namespace pico::comm {

const char* to_string(Status s) {
  switch (s) {
    case Status::kOk:
      return "ok";
    case Status::kTimeout:
      return "timeout";
    case Status::kPeerFailed:
      return "peer failed";
    case Status::kAborted:
      return "aborted";
    case Status::kInvalid:
      return "invalid";
  }
  return "?";
}

using Clock = std::chrono::steady_clock;

// What each rank deposits for the collective in progress.
struct Slot {
  std::uint64_t op = 0;  // kind of collective, checked for agreement
  std::uint64_t tag = 0;
  std::uint64_t count = 0;
  WireDtype wire = WireDtype::kFloat32;
  int root = 0;
  float* data = nullptr;
  const std::vector<std::uint8_t>* payload = nullptr;
};

struct InProcessGroup::State {
  explicit State(int w) : world(w), slots(static_cast<std::size_t>(w)) {}
  const int world;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  std::uint64_t generation = 0;
  Status broken = Status::kOk;
  std::string broken_reason;
  std::vector<Slot> slots;

  // Waits until all ranks arrive; kOk, or why not.
  Status barrier(Clock::time_point deadline, std::string& why) {
    std::unique_lock<std::mutex> lock(mu);
    if (broken != Status::kOk) {
      why = broken_reason;
      return broken == Status::kAborted ? Status::kAborted : Status::kPeerFailed;
    }
    const std::uint64_t gen = generation;
    if (++arrived == world) {
      arrived = 0;
      ++generation;
      cv.notify_all();
      return Status::kOk;
    }
    while (generation == gen && broken == Status::kOk) {
      if (cv.wait_until(lock, deadline) == std::cv_status::timeout && generation == gen && broken == Status::kOk) {
        broken = Status::kTimeout;
        broken_reason =
            str("a rank did not reach the collective within the timeout (", arrived, " of ", world, " arrived)");
        cv.notify_all();
        why = broken_reason;
        return Status::kTimeout;
      }
    }
    if (generation != gen) return Status::kOk;
    why = broken_reason;
    return broken == Status::kAborted ? Status::kAborted : Status::kPeerFailed;
  }
};

namespace {

enum Op : std::uint64_t { kAllReduce = 1, kAllGather = 2, kBroadcast = 3, kBarrier = 4 };

class InProcessCommunicator final : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<InProcessGroup::State> state, int rank) : s_(std::move(state)), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return s_->world; }

  CollectiveResult all_reduce(float* data, std::size_t n, const AllreduceOptions& o) override {
    const auto t0 = Clock::now();
    CollectiveResult r = begin({kAllReduce, o.tag, n, o.wire, 0, data, nullptr}, t0 + o.timeout);
    if (!r.ok()) return finish(r, t0);
    const int w = s_->world;
    // Rank r reduces the chunk it owns in the ring, (r + 1) mod W, for everyone.
    const int chunk = (rank_ + 1) % w;
    const auto [b, e] = ring_chunk(n, w, chunk);
    if (e > b) {
      std::vector<const float*> inputs(static_cast<std::size_t>(w));
      for (int i = 0; i < w; ++i) inputs[i] = s_->slots[i].data;
      std::vector<float> result(e - b);
      ring_reduce_reference(o.wire, inputs, chunk, b, e, result.data());
      // Every rank must have read its inputs before anyone overwrites them.
      r = wait(t0 + o.timeout);
      if (!r.ok()) return finish(r, t0);
      for (int i = 0; i < w; ++i) std::memcpy(s_->slots[i].data + b, result.data(), (e - b) * sizeof(float));
    } else {
      r = wait(t0 + o.timeout);
      if (!r.ok()) return finish(r, t0);
    }
    r = wait(t0 + o.timeout);
    r.bytes_sent = ring_allreduce_payload_bytes(o.wire, n, w, rank_);
    r.bytes_received = ring_allreduce_payload_bytes(o.wire, n, w, (rank_ + w - 1) % w);
    return finish(r, t0);
  }

  CollectiveResult all_gather(const std::vector<std::uint8_t>& mine, std::vector<std::vector<std::uint8_t>>& out,
                              const AllgatherOptions& o) override {
    const auto t0 = Clock::now();
    CollectiveResult r = begin({kAllGather, o.tag, 0, WireDtype::kFloat32, 0, nullptr, &mine}, t0 + o.timeout);
    if (!r.ok()) return finish(r, t0);
    const int w = s_->world;
    out.assign(static_cast<std::size_t>(w), {});
    for (int i = 0; i < w; ++i) {
      out[i] = *s_->slots[i].payload;
      // A ring all-gather forwards every payload but the next rank's own.
      if (i != (rank_ + 1) % w) r.bytes_sent += s_->slots[i].payload->size();
      if (i != rank_) r.bytes_received += s_->slots[i].payload->size();
    }
    CollectiveResult done = wait(t0 + o.timeout);
    done.bytes_sent = r.bytes_sent;
    done.bytes_received = r.bytes_received;
    return finish(done, t0);
  }

  CollectiveResult broadcast(std::vector<std::uint8_t>& data, const BroadcastOptions& o) override {
    const auto t0 = Clock::now();
    if (o.root < 0 || o.root >= s_->world)
      return finish({Status::kInvalid, str("broadcast root ", o.root, " outside [0, ", s_->world, ")")}, t0);
    CollectiveResult r = begin({kBroadcast, o.tag, 0, WireDtype::kFloat32, o.root, nullptr, &data}, t0 + o.timeout);
    if (!r.ok()) return finish(r, t0);
    const std::size_t size = s_->slots[o.root].payload->size();
    std::vector<std::uint8_t> copy;
    if (rank_ != o.root) copy = *s_->slots[o.root].payload;
    // A chain root → root+1 → …: every rank but the last forwards the payload once.
    if ((rank_ - o.root + s_->world) % s_->world != s_->world - 1) r.bytes_sent = size;
    if (rank_ != o.root) r.bytes_received = size;
    CollectiveResult done = wait(t0 + o.timeout);  // root's buffer is read by all before it may change
    if (rank_ != o.root && done.ok()) data = std::move(copy);
    done.bytes_sent = r.bytes_sent;
    done.bytes_received = r.bytes_received;
    return finish(done, t0);
  }

  CollectiveResult barrier(const BarrierOptions& o) override {
    const auto t0 = Clock::now();
    CollectiveResult r = begin({kBarrier, o.tag, 0, WireDtype::kFloat32, 0, nullptr, nullptr}, t0 + o.timeout);
    if (!r.ok()) return finish(r, t0);
    return finish(wait(t0 + o.timeout), t0);
  }

 private:
  // Deposit this rank's slot, wait for everyone, and check that all ranks agree.
  CollectiveResult begin(const Slot& slot, Clock::time_point deadline) {
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->slots[rank_] = slot;
    }
    CollectiveResult r = wait(deadline);
    if (!r.ok()) return r;
    for (int i = 0; i < s_->world; ++i) {
      const Slot& other = s_->slots[i];
      if (other.op != slot.op || other.tag != slot.tag || other.count != slot.count || other.wire != slot.wire ||
          other.root != slot.root)
        return {Status::kInvalid, str("rank ", i, " called a different collective (op ", other.op, " tag ", other.tag,
                                      " count ", other.count, ") than rank ", rank_, " (op ", slot.op, " tag ",
                                      slot.tag, " count ", slot.count, ")")};
    }
    return r;
  }

  CollectiveResult wait(Clock::time_point deadline) {
    CollectiveResult r;
    r.status = s_->barrier(deadline, r.error);
    return r;
  }

  CollectiveResult finish(CollectiveResult r, Clock::time_point t0) const {
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    r.world_size = s_->world;
    return r;
  }

  std::shared_ptr<InProcessGroup::State> s_;
  int rank_;
};

}  // namespace

InProcessGroup::InProcessGroup(int world_size) {
  PICO_CHECK(world_size >= 1, "world size ", world_size);
  state_ = std::make_shared<State>(world_size);
}

InProcessGroup::~InProcessGroup() = default;
int InProcessGroup::world_size() const {
  return state_->world;
}

std::unique_ptr<Communicator> InProcessGroup::communicator(int rank) {
  PICO_CHECK(rank >= 0 && rank < state_->world, "rank ", rank, " of ", state_->world);
  return std::make_unique<InProcessCommunicator>(state_, rank);
}

void InProcessGroup::abort(const std::string& reason) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->broken = Status::kAborted;
  state_->broken_reason = reason;
  state_->cv.notify_all();
}

}  // namespace pico::comm
