// pico/comm/wire.h — the header every pico ZeroMQ message starts with, and its decoder.
//
// One message = one ZeroMQ frame: an 80-byte little-endian header followed by `length`
// payload bytes. The header names the run, the membership epoch, the collective (round,
// tag, kind) and where the payload goes (chunk, offset, element count), and carries two
// CRC-32C checksums: one over the payload, one over the header itself. Forwarding a
// message (ring all-gather) rewrites only the sender field and the header checksum.
//
//   off size field        meaning
//   0   4    magic        kWireMagic ("PZMQ")
//   4   2    version      kWireVersion
//   6   1    kind         MessageKind
//   7   1    dtype        WireDtype of the payload (all-reduce kinds; 0 otherwise)
//   8   8    run_id       the run; every member of a group agrees on it
//   16  8    round        collective sequence number within the group (0, 1, 2, …)
//   24  8    tag          caller's tag of the collective (AllreduceOptions::tag etc.)
//   32  4    epoch        membership generation; a group rebuilt after a failure has a new one
//   36  2    src          sender's rank (rewritten by every hop that forwards)
//   38  2    world        group size
//   40  4    chunk        all-reduce: chunk index; all-gather/broadcast/barrier: origin rank; else 0
//   44  4    length       payload bytes following the header
//   48  8    offset       all-reduce: first element of the segment; gather/broadcast: byte offset
//   56  8    total        all-reduce: element count n; gather/broadcast: origin's payload bytes
//   64  8    count        all-reduce: elements in this segment; 0 otherwise
//   72  4    payload_crc  crc32c(payload)
//   76  4    header_crc   crc32c(bytes [0, 76))
//
// The decoder checks everything that can be checked without knowing the collective in
// progress (structure, ranges, checksums) and never allocates; the communicator then checks
// the fields against the collective it expects (run id, epoch, round, sender, segment).
// This is not the transport (zmq_communicator.h) and does no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "pico/common/codec.h"

namespace pico::comm {

inline constexpr std::uint32_t kWireMagic = 0x514D5A50;  // bytes 'P' 'Z' 'M' 'Q'
inline constexpr std::uint16_t kWireVersion = 1;
inline constexpr std::size_t kWireHeaderBytes = 80;
// Abort/goodbye reasons are short texts.
inline constexpr std::uint32_t kWireMaxReasonBytes = 512;

enum class MessageKind : std::uint8_t {
  kReduceScatter = 1,   // all-reduce, first phase: a partial sum travelling towards the chunk's owner
  kAllGatherChunk = 2,  // all-reduce, second phase: the owner's final (encoded) chunk
  kGather = 3,          // all_gather: a segment of one rank's payload
  kBroadcast = 4,       // broadcast: a segment of the root's payload
  kBarrier = 5,         // barrier: "rank `chunk` has arrived"
  kAbort = 6,           // the sender's group is broken; payload = reason text
  kGoodbye = 7,         // the sender leaves the group after its last collective
  kDone = 8,            // to the left neighbour: "I have received everything of this round"
};
const char* to_string(MessageKind k);

struct MessageHeader {
  MessageKind kind = MessageKind::kBarrier;
  WireDtype dtype = WireDtype::kFloat32;
  std::uint64_t run_id = 0;
  std::uint64_t round = 0;
  std::uint64_t tag = 0;
  std::uint32_t epoch = 0;
  std::uint16_t src = 0;
  std::uint16_t world = 1;
  std::uint32_t chunk = 0;
  std::uint32_t length = 0;
  std::uint64_t offset = 0;
  std::uint64_t total = 0;
  std::uint64_t count = 0;
  std::uint32_t payload_crc = 0;  // filled by wire_seal
  std::uint32_t header_crc = 0;   // filled by wire_seal / wire_reseal_header
};

// Why a message was rejected by the decoder.
enum class WireError : std::uint8_t {
  kOk = 0,
  kShort,  // fewer bytes than a header
  kBadMagic,
  kBadVersion,
  kBadKind,
  kBadDtype,
  kBadLength,  // length field disagrees with the frame size (a lying length)
  kTooLong,    // length above the receiver's bound
  kBadRank,    // world 0, src ≥ world, or chunk/origin ≥ world
  kBadRange,   // offset/total/count inconsistent (segment outside its buffer, …)
  kBadHeaderChecksum,
  kBadPayloadChecksum,
};
const char* to_string(WireError e);

struct WireLimits {
  std::uint32_t max_payload_bytes = 1u << 20;  // the largest payload the receiver accepts
};

// Serializes h into out[0, kWireHeaderBytes) and seals it: payload_crc over
// payload[0, h.length) and header_crc over the header. The caller has written the payload.
void wire_seal(MessageHeader h, const std::uint8_t* payload, std::uint8_t* out);
// Rewrites src of an encoded header and recomputes header_crc (payload untouched).
void wire_reseal_header(std::uint8_t* header, std::uint16_t src);

// Decodes and validates the frame data[0, size): structure, field ranges and both
// checksums. On kOk fills `out`; the payload is data + kWireHeaderBytes. `detail` (optional)
// receives a one-line explanation naming the bad field and value. Never allocates beyond
// `detail`, never reads outside data[0, size).
WireError wire_decode(const std::uint8_t* data, std::size_t size, const WireLimits& limits, MessageHeader& out,
                      std::string* detail = nullptr);

}  // namespace pico::comm
