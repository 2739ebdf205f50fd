// tests/broker/fuzz_broker_decode.cpp — libFuzzer target for the broker's messages (protocol.h).
//
// Built only with -DPICO_FUZZ=ON and clang (scripts/fuzz). The first input byte picks a mode:
//   bit 1 clear — the rest is a frame as received from the network (bit 0 set: both CRCs are
//                 first made valid, so the fuzzer gets past them to the JSON); a frame that
//                 decodes is then read as every message struct of its type;
//   bit 1 set   — the rest is a JSON text, read as every message struct there is.
// Whatever happens, nothing may crash or throw anything but ProtocolError (the broker and the
// member catch only that), and a struct that was read must survive to_json → from_json
// unchanged (what the broker stores and forwards is what it was sent).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "pico/broker/protocol.h"
#include "pico/common/hash.h"

using namespace pico::broker;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

template <typename T>
void read_as(const nlohmann::json& body) {
  try {
    const T t = T::from_json(body);
    const nlohmann::json once = t.to_json();
    check(T::from_json(once).to_json() == once);
  } catch (const ProtocolError&) {
  }
}

template <typename... Ts>
void read_as_every(const Message& m, bool any_type) {
  ((any_type || Ts::kType == m.type ? read_as<Ts>(m.body) : void()), ...);
}

void read(const Message& m, bool any_type) {
  read_as_every<CreateRun, CreateRunReply, RunInfo, RunInfoReply, Join, JoinReply, Heartbeat, RoundResult, Ready,
                ReadyReply, RoundStart, SnapshotRequest, SnapshotPut, SnapshotPutReply, SnapshotGet, SnapshotGetReply,
                SnapshotReady, Resync, Evicted, Leave, RunFinished, LedgerQuery, LedgerReply, StatusQuery, ErrorReply>(
      m, any_type);
  try {
    const ProgressReport p = ProgressReport::read(m.body);  // never throws: reports are optional
    nlohmann::json j = nlohmann::json::object();
    p.write(j);
  } catch (...) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  if (mode & 2) {
    Message m;
    m.body = nlohmann::json::parse(data + 1, data + size, nullptr, /*allow_exceptions=*/false);
    if (m.body.is_discarded()) return 0;
    read(m, /*any_type=*/true);
    return 0;
  }
  std::string frame(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((mode & 1) && frame.size() >= kBrokerHeaderBytes) {
    const std::uint32_t body_crc = pico::crc32c(frame.data() + kBrokerHeaderBytes, frame.size() - kBrokerHeaderBytes);
    std::memcpy(frame.data() + 24, &body_crc, 4);
    const std::uint32_t header_crc = pico::crc32c(frame.data(), 28);
    std::memcpy(frame.data() + 28, &header_crc, 4);
  }
  std::string why;
  const auto m = decode_message(reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size(), why);
  if (!m) {
    check(!why.empty());
    return 0;
  }
  check(m->body.is_object());
  check(m->blob.size() <= kMaxBlobBytes);
  // Encoding what was decoded gives the same message back.
  const std::string again = encode_message(*m);
  std::string why2;
  const auto m2 = decode_message(reinterpret_cast<const std::uint8_t*>(again.data()), again.size(), why2);
  check(m2 && m2->type == m->type && m2->request_id == m->request_id && m2->body == m->body && m2->blob == m->blob);
  read(*m, /*any_type=*/false);
  return 0;
}
