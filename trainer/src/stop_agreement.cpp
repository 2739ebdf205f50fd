// The stop board (stop_agreement.h).
#include "stop_agreement.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "pico/common/error.h"
#include "pico/common/interrupt.h"
#include "pico/common/strings.h"

namespace pico::trainer {

struct StopAgreement::Board {
  std::atomic<std::int64_t> requested;                   // 0, then 1 once a contributor saw a stop request
  std::atomic<std::int64_t> stop_at;                     // −1 until the decider publishes m
  std::atomic<std::int64_t> progress[kMaxContributors];  // steps each contributor has done or started
};
static_assert(std::atomic<std::int64_t>::is_always_lock_free, "the board is shared between processes");

namespace {
void init_board(void* p) {
  std::memset(p, 0, sizeof(std::int64_t) * (2 + StopAgreement::kMaxContributors));
  reinterpret_cast<std::atomic<std::int64_t>*>(p)[1].store(-1);
}
}  // namespace

StopAgreement::StopAgreement(Board* board, int contributors, void* mapping, std::size_t bytes)
    : board_(board), contributors_(contributors), mapping_(mapping), bytes_(bytes) {
  PICO_CHECK(contributors >= 1 && contributors <= kMaxContributors, "bad contributor count ", contributors);
}

std::unique_ptr<StopAgreement> StopAgreement::in_memory(int contributors) {
  auto* board = new Board;
  init_board(board);
  return std::unique_ptr<StopAgreement>(new StopAgreement(board, contributors, nullptr, 0));
}

std::unique_ptr<StopAgreement> StopAgreement::shared_file(const std::string& path, int contributors, bool create) {
  const std::size_t bytes = sizeof(Board);
  const int fd = ::open(path.c_str(), create ? (O_RDWR | O_CREAT | O_TRUNC) : O_RDWR, 0600);
  if (fd < 0)
    throw Error(str("cannot open the stop board ", path, ": ", std::strerror(errno)),
                "the launcher of --comm zmq creates it in RUN_DIR/rendezvous; is the run directory writable?");
  if (create && ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(str("cannot size the stop board ", path, ": ", std::strerror(e)));
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) throw Error(str("cannot map the stop board ", path, ": ", std::strerror(e)));
  if (create) init_board(p);
  return std::unique_ptr<StopAgreement>(new StopAgreement(static_cast<Board*>(p), contributors, p, bytes));
}

StopAgreement::~StopAgreement() {
  if (mapping_ != nullptr)
    ::munmap(mapping_, bytes_);
  else
    delete board_;
}

bool StopAgreement::may_continue(int w, std::int64_t done) {
  auto& b = *board_;
  if (stop_requested() && b.requested.load() == 0) {
    std::int64_t expected = 0;
    if (b.requested.compare_exchange_strong(expected, 1)) {
      // The decider: stop after the furthest step anyone has started (at least our own).
      std::int64_t m = done;
      for (int i = 0; i < contributors_; ++i)
        if (i != w) m = std::max(m, b.progress[i].load());
      b.stop_at.store(m);
      if (done >= m) return false;
      b.progress[w].store(done + 1);
      return true;
    }
  }
  b.progress[w].store(done + 1);
  if (b.requested.load() == 0) return true;
  std::int64_t m;
  while ((m = b.stop_at.load()) < 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  return done + 1 <= m;
}

std::int64_t StopAgreement::stop_step() const {
  return board_->stop_at.load();
}

}  // namespace pico::trainer
