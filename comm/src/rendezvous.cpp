#include "pico/comm/rendezvous.h"

#include <sys/stat.h>
#include <unistd.h>

#include <sstream>
#include <thread>

#include "pico/comm/curve_keys.h"
#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/log.h"

namespace pico::comm {

namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kFormat = "pico-rendezvous 1";
constexpr std::size_t kMaxFileBytes = 4096;

bool exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

Member parse_member(const std::string& path, const FileRendezvousOptions& o, int expected_rank, bool curve) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || st.st_size > static_cast<off_t>(kMaxFileBytes))
    throw Error(str("rendezvous file ", path, " is unreadable or larger than ", kMaxFileBytes, " bytes"),
                "use a fresh rendezvous directory per run");
  std::istringstream in(read_file(path));
  std::string line;
  std::getline(in, line);
  if (line != kFormat)
    throw Error(str("rendezvous file ", path, " starts with '", line.substr(0, 40), "', expected '", kFormat, "'"),
                "use a fresh rendezvous directory per run");
  Member m;
  m.rank = -1;
  std::uint64_t run_id = 0;
  int world = -1;
  bool have_run = false;
  while (std::getline(in, line)) {
    const auto sp = line.find(' ');
    const std::string key = line.substr(0, sp);
    const std::string value = sp == std::string::npos ? "" : line.substr(sp + 1);
    try {
      if (key == "run_id") {
        run_id = std::stoull(value);
        have_run = true;
      } else if (key == "rank") {
        m.rank = std::stoi(value);
      } else if (key == "world") {
        world = std::stoi(value);
      } else if (key == "endpoint") {
        m.endpoint = value;
      } else if (key == "public_key") {
        m.public_key = value;
      }
    } catch (const std::exception&) {
      throw Error(str("rendezvous file ", path, ": bad value '", value, "' for ", key));
    }
  }
  if (!have_run || run_id != o.run_id)
    throw Error(str("rendezvous file ", path, " is for run ", run_id, ", this process joins run ", o.run_id),
                "give all workers the same run id, and each run its own rendezvous directory");
  if (world != o.world_size)
    throw Error(str("rendezvous file ", path, " expects ", world, " ranks, this process ", o.world_size),
                "start every worker with the same world size");
  if (m.rank != expected_rank) throw Error(str("rendezvous file ", path, " names rank ", m.rank));
  if (m.endpoint.rfind("tcp://", 0) != 0 && m.endpoint.rfind("ipc://", 0) != 0)
    throw Error(
        str("rendezvous file ", path, " has endpoint '", m.endpoint, "', expected tcp://HOST:PORT or ipc://PATH"));
  if (curve && !curve_is_valid_key(m.public_key))
    throw Error(str("rendezvous file ", path, " has no valid CURVE public key"),
                "every worker must run with CURVE on (or all in the benchmark-only plaintext mode)");
  return m;
}

// Waits until all `names(r)` exist; throws naming the missing ranks at the deadline.
void wait_for_all(const FileRendezvousOptions& o, const std::string& what, auto name_of) {
  const auto deadline = Clock::now() + o.timeout;
  while (true) {
    std::vector<int> missing;
    for (int r = 0; r < o.world_size; ++r)
      if (!exists(name_of(r))) missing.push_back(r);
    if (missing.empty()) return;
    if (Clock::now() >= deadline) {
      std::string list;
      for (std::size_t i = 0; i < missing.size() && i < 16; ++i) list += (i ? ", " : "") + std::to_string(missing[i]);
      throw Error(str("rendezvous in ", o.dir, ": rank(s) ", list, " did not ", what, " within ", o.timeout.count(),
                      " ms (", o.world_size - static_cast<int>(missing.size()), " of ", o.world_size, " did)"),
                  "start every worker with the same rendezvous directory and world size; check the missing "
                  "workers' logs");
    }
    std::this_thread::sleep_for(o.poll_interval);
  }
}

}  // namespace

void FileRendezvousOptions::validate() const {
  if (dir.empty()) throw Error("rendezvous directory is empty");
  if (world_size < 1 || world_size > 65535) throw Error(str("rendezvous world size ", world_size, " out of range"));
  if (rank < 0 || rank >= world_size) throw Error(str("rendezvous rank ", rank, " outside [0, ", world_size, ")"));
  if (timeout.count() <= 0 || poll_interval.count() <= 0) throw Error("rendezvous timeouts must be positive");
}

Membership rendezvous_files(ZmqNode& node, const FileRendezvousOptions& o) {
  o.validate();
  const bool curve = node.options().security == ZmqSecurity::kCurve;
  const std::string dir = str(o.dir, "/epoch-", o.epoch);
  make_dirs(dir);
  const auto member_file = [&](int r) { return str(dir, "/rank-", r, ".member"); };
  const auto ready_file = [&](int r) { return str(dir, "/rank-", r, ".ready"); };

  write_file_atomic(member_file(o.rank),
                    str(kFormat, "\nrun_id ", o.run_id, "\nrank ", o.rank, "\nworld ", o.world_size, "\nendpoint ",
                        node.endpoint(), "\npublic_key ", node.public_key(), "\n"));
  wait_for_all(o, "publish their endpoint", member_file);

  Membership m;
  m.run_id = o.run_id;
  m.epoch = o.epoch;
  m.rank = o.rank;
  std::vector<std::string> keys;
  for (int r = 0; r < o.world_size; ++r) {
    m.members.push_back(parse_member(member_file(r), o, r, curve));
    keys.push_back(m.members.back().public_key);
  }
  if (m.members[o.rank].endpoint != node.endpoint())
    throw Error(str("rendezvous file ", member_file(o.rank), " names ", m.members[o.rank].endpoint, ", not this node (",
                    node.endpoint(), ")"),
                "two workers were started with the same rank; use a fresh rendezvous directory");
  m.validate(curve);
  node.admit(keys);
  write_file_atomic(ready_file(o.rank), "ready\n");
  wait_for_all(o, "become ready", ready_file);
  log_debug("[zmq] rendezvous in ", dir, ": ", o.world_size, " ranks, this is rank ", o.rank);
  return m;
}

void publish_survivors(const std::string& dir, std::uint32_t epoch, const std::vector<int>& old_ranks) {
  const std::string d = str(dir, "/epoch-", epoch);
  make_dirs(d);
  std::string text = "pico-survivors 1\n";
  for (int r : old_ranks) text += str(r, "\n");
  write_file_atomic(d + "/survivors", text);
}

std::vector<int> wait_for_survivors(const std::string& dir, std::uint32_t epoch, std::chrono::milliseconds timeout) {
  const std::string path = str(dir, "/epoch-", epoch, "/survivors");
  const auto deadline = Clock::now() + timeout;
  while (!exists(path)) {
    if (Clock::now() >= deadline)
      throw Error(str("no survivor list at ", path, " within ", timeout.count(), " ms"),
                  "the supervisor writes it with publish_survivors once it has reaped the failed worker");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::istringstream in(read_file(path));
  std::string line;
  std::getline(in, line);
  if (line != "pico-survivors 1") throw Error(str("survivor list ", path, " starts with '", line, "'"));
  std::vector<int> ranks;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      ranks.push_back(std::stoi(line));
    } catch (const std::exception&) {
      throw Error(str("survivor list ", path, ": bad rank '", line, "'"));
    }
  }
  if (ranks.empty()) throw Error(str("survivor list ", path, " names no rank"));
  return ranks;
}

}  // namespace pico::comm
