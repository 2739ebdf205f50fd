// pico/broker/protocol.h — messages between contributors and the broker (the control plane).
//
// One message = one ZeroMQ frame: a 32-byte little-endian header, a JSON object, and an
// optional binary blob (a chunk of a θ_g snapshot). Heavy traffic (pseudo-gradients) never
// goes through the broker; it travels peer to peer (comm/zmq_communicator.h).
//
//   off size field
//   0   4    magic      kBrokerMagic ("PBRK")
//   4   2    version    kBrokerVersion
//   6   2    type       MessageType
//   8   8    request_id the sender's id; a reply carries the id of the request it answers
//   16  4    json_len   bytes of JSON after the header (≤ kMaxJsonBytes)
//   20  4    blob_len   bytes of blob after the JSON (≤ kMaxBlobBytes)
//   24  4    body_crc   CRC-32C of JSON + blob
//   28  4    header_crc CRC-32C of bytes [0, 28)
//
// decode_message validates every field and bounds every length before allocating, parses
// the JSON and checks it is an object; it never throws on bad input — it returns why.
// Field access on a decoded message (get_*) throws ProtocolError naming the field.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace pico::broker {

inline constexpr std::uint32_t kBrokerMagic = 0x4B524250;  // bytes 'P' 'B' 'R' 'K'
inline constexpr std::uint16_t kBrokerVersion = 1;
inline constexpr std::size_t kBrokerHeaderBytes = 32;
inline constexpr std::uint32_t kMaxJsonBytes = 4u << 20;   // configs and member lists
inline constexpr std::uint32_t kMaxBlobBytes = 16u << 20;  // one snapshot chunk
inline constexpr std::size_t kMaxMessageBytes = kBrokerHeaderBytes + kMaxJsonBytes + kMaxBlobBytes;

enum class MessageType : std::uint16_t {
  kAck = 1,              // broker → client: request done; JSON may carry results
  kError = 2,            // broker → client: {reason, hint}
  kCreateRun = 3,        // client → broker: register a run
  kJoin = 4,             // client → broker: join a run
  kHeartbeat = 5,        // client → broker: alive, with progress
  kReady = 6,            // client → broker: inner steps of a round done, Δ summary
  kRoundStart = 7,       // broker → client: run the collective of a round with these members
  kRoundResult = 8,      // client → broker: the collective's outcome and θ_g hash
  kSnapshotRequest = 9,  // broker → client: upload θ_g + outer state after round r
  kSnapshotPut = 10,     // client → broker: one chunk of a snapshot
  kSnapshotGet = 11,     // client → broker: ask for a snapshot chunk
  kSnapshotReady = 12,   // broker → client: a snapshot for you (joiner / resync) is available
  kResync = 13,          // broker → client: your θ_g disagrees or you missed a round: fetch the snapshot
  kEvicted = 14,         // broker → client: you are no longer a member
  kLeave = 15,           // client → broker: leaving the run
  kLedgerQuery = 16,     // client → broker: the run's ledger
  kStatusQuery = 17,     // client → broker: runs, members, rounds
  kRunFinished = 18,     // client → broker: the run reached its last step
  kRunInfo = 19,         // client → broker: a run's shared config and dataset hash (before joining)
};
const char* to_string(MessageType t);

struct Message {
  MessageType type = MessageType::kAck;
  std::uint64_t request_id = 0;
  nlohmann::json body = nlohmann::json::object();
  std::string blob;  // binary payload (snapshot chunk), may be empty
};

// A field that is missing or of the wrong type in a decoded message.
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string encode_message(const Message& m);
// Decodes data[0, size); on failure returns nullopt and sets `why` (never throws, never
// allocates more than size bytes).
std::optional<Message> decode_message(const std::uint8_t* data, std::size_t size, std::string& why);

// Typed access to body fields; throw ProtocolError("field 'x' …").
std::string get_string(const Message& m, const char* field, std::size_t max_len = 1 << 20);
std::int64_t get_int(const Message& m, const char* field);
double get_double(const Message& m, const char* field);
bool get_bool(const Message& m, const char* field);

// Optional progress fields that a member's heartbeat, ready and run_finished may carry, for
// the dashboard: `loss` (its last training loss), and `val_loss` with `val_round` (its
// validation loss on θ_g of that round). Absent, wrong-typed or non-finite fields read as
// nullopt: they are reports to display, never a reason to refuse a message.
struct ProgressReport {
  std::optional<double> loss;
  std::optional<double> val_loss;
  std::optional<std::int64_t> val_round;
};
ProgressReport read_progress(const Message& m);

// pico://HOST:PORT/RUN_ID?key=HEX64[&token=TOKEN] — what `pico train` prints and `--join` takes.
// pico://HOST:PORT/?key=HEX64 (no run id) is a broker code: what a standing `pico broker`
// prints, for `pico train --broker CODE` and `pico ledger RUN --broker CODE`.
struct JoinCode {
  std::string host;
  int port = 0;
  std::string run_id;      // "" in a broker code
  std::string broker_key;  // Z85 (40 chars), decoded from the code's hex
  std::string token;       // "" for public runs
  std::string endpoint() const { return "tcp://" + host + ":" + std::to_string(port); }
};
// Throws pico::Error naming what is wrong with the code, and a HINT. A broker code (no run
// id) is accepted only with `allow_broker_code`.
JoinCode parse_join_code(const std::string& code, bool allow_broker_code = false);
std::string format_join_code(const JoinCode& code);

// Run ids: [A-Za-z0-9_-], 1..64 chars.
bool is_valid_run_id(const std::string& id);

}  // namespace pico::broker
