// tests/comm/fuzz_wire_decode.cpp — libFuzzer target for the message decoder (wire.h).
//
// Built only with -DPICO_FUZZ=ON and clang (scripts/fuzz). The first input byte picks a mode:
// even — the rest is decoded as received from the network; odd — both checksums of the rest
// are first made valid, so the fuzzer gets past them and explores every field check. Either
// way the decoder must not crash, read out of bounds or allocate, and whatever it accepts
// must satisfy the invariants the communicator relies on.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "checksum.h"
#include "pico/comm/wire.h"

using namespace pico;
using namespace pico::comm;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool fix_checksums = data[0] & 1;
  std::vector<std::uint8_t> frame(data + 1, data + size);
  if (fix_checksums && frame.size() >= kWireHeaderBytes) {
    const std::uint32_t pcrc = wire_crc32c(frame.data() + kWireHeaderBytes, frame.size() - kWireHeaderBytes);
    std::memcpy(frame.data() + 72, &pcrc, 4);
    const std::uint32_t hcrc = wire_crc32c(frame.data(), 76);
    std::memcpy(frame.data() + 76, &hcrc, 4);
  }
  const WireLimits limits{4096};
  MessageHeader h;
  std::string detail;
  const WireError e = wire_decode(frame.data(), frame.size(), limits, h, &detail);
  if (e != WireError::kOk) {
    check(!detail.empty());
    return 0;
  }
  // What an accepted frame guarantees.
  check(frame.size() == kWireHeaderBytes + h.length);
  check(h.length <= limits.max_payload_bytes);
  check(h.world >= 1 && h.src < h.world && h.chunk < h.world);
  switch (h.kind) {
    case MessageKind::kReduceScatter:
    case MessageKind::kAllGatherChunk:
      check(h.count >= 1 && h.offset < h.total && h.count <= h.total - h.offset);
      check(encoded_size(h.dtype, h.count) == h.length);
      break;
    case MessageKind::kGather:
    case MessageKind::kBroadcast:
      check(h.offset <= h.total && h.length <= h.total - h.offset);
      break;
    case MessageKind::kBarrier:
    case MessageKind::kDone:
      check(h.length == 0);
      break;
    case MessageKind::kAbort:
    case MessageKind::kGoodbye:
      check(h.length <= kWireMaxReasonBytes);
      break;
  }
  // Sealing the decoded header over the same payload reproduces the frame exactly.
  std::vector<std::uint8_t> again(frame.size());
  std::memcpy(again.data() + kWireHeaderBytes, frame.data() + kWireHeaderBytes, h.length);
  wire_seal(h, again.data() + kWireHeaderBytes, again.data());
  check(again == frame);
  return 0;
}
