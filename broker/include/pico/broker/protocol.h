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

// ---------------------------------------------------------------------------------------
// The messages, one struct each. The broker (core.cpp) and the member (trainer/src/
// distributed.cpp) build and read them only through these: a field's name and type are
// written once, here and in protocol.cpp. Every struct has
//   static constexpr MessageType kType;                 its type on the wire (kAck: a reply)
//   nlohmann::json to_json() const;
//   static T from_json(const nlohmann::json& body);      throws ProtocolError naming the
//                                                        field that is missing, of the wrong
//                                                        type, too long or out of range
// and message<T>(msg) / parse<T>(message) wrap them (parse also checks the type).

enum class RunStatus { kActive, kFinished };
enum class MemberStatus { kActive, kEvicted, kLeft };
enum class RoundStatus { kOpen, kDone, kFailed };
const char* to_string(RunStatus s);
const char* to_string(MemberStatus s);
const char* to_string(RoundStatus s);
// The inverse of to_string; throws ProtocolError for any other text.
RunStatus parse_run_status(const std::string& s);
MemberStatus parse_member_status(const std::string& s);
RoundStatus parse_round_status(const std::string& s);

// What a member's heartbeat, ready and run_finished report for display (the dashboard):
// its last training loss, and its validation loss on θ_g of round `val_round`. Absent,
// wrong-typed or non-finite values read as nullopt: reports, never a reason to refuse.
struct ProgressReport {
  std::optional<double> loss;
  std::optional<double> val_loss;
  std::optional<std::int64_t> val_round;  // set whenever val_loss is
  void write(nlohmann::json& body) const;
  static ProgressReport read(const nlohmann::json& body);
};

// client → broker: register a run (the creator). Reply: CreateRunReply.
struct CreateRun {
  static constexpr MessageType kType = MessageType::kCreateRun;
  std::string run_id;              // [A-Za-z0-9_-]{1,64}
  std::string config_yaml;         // the run's shared settings, resolved
  std::string dataset_hash;        // members must hold this dataset
  std::int64_t num_shards = 1;     // training shards of the dataset (≥ 1)
  bool is_private = false;         // "private": allow-listed keys and token holders only
  std::int64_t min_members = 1;    // members a round waits for, in [1, 100000]
  std::string token_sha256;        // SHA-256 of the join token ("" for public runs)
  std::string theta0_hash;         // hash of θ_g at round 0 (the seeded initialization)
  std::vector<std::string> allow;  // allow-listed public keys (Z85)
  std::string prepare_command;     // how the dataset was made (for a joiner's HINT)
  std::string algorithm;           // e.g. "diloco H=30 uint8", for display
  std::int64_t model_params = 0;   // parameters of the model, for display (ddp's bytes)
  nlohmann::json to_json() const;
  static CreateRun from_json(const nlohmann::json& body);
};
struct CreateRunReply {
  static constexpr MessageType kType = MessageType::kAck;
  std::string run_id;
  std::int64_t round = 0;  // completed rounds (0 for a new run)
  bool existing = false;   // the run was registered before (its creator resumed)
  RunStatus status = RunStatus::kActive;
  std::string seen_from = "";  // the address the broker sees this client's connection come from
  std::string relay = "";      // the broker's relay (tcp://HOST:PORT, its key is the broker's); "" = none
  nlohmann::json to_json() const;
  static CreateRunReply from_json(const nlohmann::json& body);
};

// client → broker: a run's shared settings, before joining. Reply: RunInfoReply.
struct RunInfo {
  static constexpr MessageType kType = MessageType::kRunInfo;
  std::string run_id;
  nlohmann::json to_json() const;
  static RunInfo from_json(const nlohmann::json& body);
};
struct RunInfoReply {
  static constexpr MessageType kType = MessageType::kAck;
  std::string run_id, config_yaml, dataset_hash;
  std::int64_t num_shards = 1, round = 0, min_members = 1;
  bool is_private = false;
  std::string prepare_command;
  std::string seen_from = "";  // the address the broker sees this client's connection come from
  std::string relay = "";      // the broker's relay (tcp://HOST:PORT, its key is the broker's); "" = none
  nlohmann::json to_json() const;
  static RunInfoReply from_json(const nlohmann::json& body);
};

// client → broker: join a run. Reply: JoinReply.
struct Join {
  static constexpr MessageType kType = MessageType::kJoin;
  std::string run_id, dataset_hash;
  std::string device;    // "cpu", "cuda:0", …
  std::string endpoint;  // where peers dial this member for the collectives
  std::string token;     // the join token of a private run ("" otherwise)
  bool relayed = false;  // `endpoint` is a port of the broker's relay (the member is behind a NAT)
  nlohmann::json to_json() const;
  static Join from_json(const nlohmann::json& body);
};
struct JoinReply {
  static constexpr MessageType kType = MessageType::kAck;
  std::int64_t member_id = 0;
  std::int64_t slot = 0;  // the member's data slot (its shards) and ring position
  std::int64_t num_shards = 1;
  std::int64_t round = 0;  // completed rounds of the run
  std::string theta0_hash;
  bool needs_snapshot = false;  // round > 0: θ_g comes as a snapshot (SnapshotReady)
  nlohmann::json to_json() const;
  static JoinReply from_json(const nlohmann::json& body);
};

// client → broker, every second (no reply): alive, and where its model stands.
struct Heartbeat {
  static constexpr MessageType kType = MessageType::kHeartbeat;
  std::string run_id;
  std::int64_t member_id = 0;
  // The round whose θ_g the member's model is based on; nullopt while it waits for a
  // snapshot (it needs θ_g before it can train).
  std::optional<std::int64_t> base_round;
  std::int64_t step = 0;
  double tokens_per_s = 0;
  ProgressReport progress;
  nlohmann::json to_json() const;
  static Heartbeat from_json(const nlohmann::json& body);
};

// client → broker: the outcome of one attempt of a round's collective. Reply: an ack.
struct RoundResult {
  static constexpr MessageType kType = MessageType::kRoundResult;
  std::string run_id;
  std::int64_t member_id = 0;
  std::int64_t round = 0, attempt = 0;
  bool ok = false;
  std::string theta_hash;  // θ_g after the round (when ok)
  std::int64_t bytes_sent = 0;
  std::string error;  // why it failed (when !ok)
  // Neighbours this member could not connect to at all (when !ok): members that are
  // unreachable at the endpoint they advertise. The broker retries without them.
  std::vector<std::int64_t> unreachable = {};
  nlohmann::json to_json() const;
  static RoundResult from_json(const nlohmann::json& body);
};

// client → broker: the member's inner steps of round `round` are done. Reply: ReadyReply,
// or Resync (its update is stale).
struct Ready {
  static constexpr MessageType kType = MessageType::kReady;
  std::string run_id;
  std::int64_t member_id = 0;
  std::int64_t round = 0;       // the round it is ready to complete
  std::int64_t base_round = 0;  // the round of the θ_g it trained from
  std::int64_t tokens = 0, inner_steps = 0;
  double compute_seconds = 0;
  double delta_norm = 0;  // ‖Δ‖₂ of its update (0 when not finite)
  bool finite = true;     // every value of Δ is finite
  ProgressReport progress;
  // Its report of the round before, if a broker restart may have lost it.
  std::optional<RoundResult> last_result;
  nlohmann::json to_json() const;
  static Ready from_json(const nlohmann::json& body);
};
struct ReadyReply {
  static constexpr MessageType kType = MessageType::kAck;
  std::int64_t round = 0;
  // The broker has not committed the round the member finished (it restarted and is still
  // collecting reports): send the ready again after this many seconds.
  std::optional<double> retry_after_s;
  nlohmann::json to_json() const;
  static ReadyReply from_json(const nlohmann::json& body);
};

// broker → members: run the collective of a round with these members, in this ring order.
struct RoundMember {
  std::int64_t member_id = 0;
  int rank = 0;
  std::string endpoint, public_key;
  double weight = 1;  // 0: take part (end in sync) but add nothing (a rejected update)
};
struct RoundStart {
  static constexpr MessageType kType = MessageType::kRoundStart;
  std::string run_id;
  std::int64_t round = 0, attempt = 0;
  std::vector<RoundMember> members;  // by rank
  nlohmann::json to_json() const;
  static RoundStart from_json(const nlohmann::json& body);
};

// broker → a member in sync: upload θ_g and the outer state after round `round`.
struct SnapshotRequest {
  static constexpr MessageType kType = MessageType::kSnapshotRequest;
  std::string run_id;
  std::int64_t round = 0;
  std::int64_t chunk_bytes = 0;
  nlohmann::json to_json() const;
  static SnapshotRequest from_json(const nlohmann::json& body);
};
// client → broker: chunk `index` of `count` of a snapshot (the message's blob). Reply: SnapshotPutReply.
struct SnapshotPut {
  static constexpr MessageType kType = MessageType::kSnapshotPut;
  std::string run_id;
  std::int64_t member_id = 0, round = 0, index = 0, count = 1;
  std::int64_t bytes = 0;  // the whole snapshot
  std::string sha256;      // of the whole snapshot
  nlohmann::json to_json() const;
  static SnapshotPut from_json(const nlohmann::json& body);
};
struct SnapshotPutReply {
  static constexpr MessageType kType = MessageType::kAck;
  std::int64_t index = 0;
  nlohmann::json to_json() const;
  static SnapshotPutReply from_json(const nlohmann::json& body);
};
// client → broker: chunk `index` of the snapshot of `round`. Reply: SnapshotGetReply + blob.
struct SnapshotGet {
  static constexpr MessageType kType = MessageType::kSnapshotGet;
  std::string run_id;
  std::int64_t member_id = 0, round = 0, index = 0;
  nlohmann::json to_json() const;
  static SnapshotGet from_json(const nlohmann::json& body);
};
struct SnapshotGetReply {
  static constexpr MessageType kType = MessageType::kAck;
  std::int64_t round = 0, index = 0, chunks = 1, bytes = 0;
  std::string sha256;
  nlohmann::json to_json() const;
  static SnapshotGetReply from_json(const nlohmann::json& body);
};
// broker → a member that needs θ_g: the snapshot of `round` is there to fetch.
struct SnapshotReady {
  static constexpr MessageType kType = MessageType::kSnapshotReady;
  std::string run_id;
  std::int64_t round = 0, bytes = 0, chunks = 1, chunk_bytes = 0;
  std::string sha256;
  nlohmann::json to_json() const;
  static SnapshotReady from_json(const nlohmann::json& body);
};

// broker → member: your θ_g is not the run's (or your update is stale): fetch a snapshot.
// Also the reply to a stale Ready.
struct Resync {
  static constexpr MessageType kType = MessageType::kResync;
  std::string run_id;
  std::int64_t round = 0;  // the run's round
  std::string reason;
  nlohmann::json to_json() const;
  static Resync from_json(const nlohmann::json& body);
};
// broker → member: you are no longer a member.
struct Evicted {
  static constexpr MessageType kType = MessageType::kEvicted;
  std::string run_id, reason;
  // Its key joined the run again as a new member (another process with the same identity):
  // the member stops rather than join back, which would evict the other in turn.
  bool replaced = false;
  // The other members could not connect to it: joining back as it is would only fail again.
  bool unreachable = false;
  nlohmann::json to_json() const;
  static Evicted from_json(const nlohmann::json& body);
};
// client → broker: leaving the run. Reply: an ack.
struct Leave {
  static constexpr MessageType kType = MessageType::kLeave;
  std::string run_id;
  std::int64_t member_id = 0;
  nlohmann::json to_json() const;
  static Leave from_json(const nlohmann::json& body);
};
// client → broker: the run reached its last round (reply: an ack); broker → a member still
// catching up: the run finished (member_id absent).
struct RunFinished {
  static constexpr MessageType kType = MessageType::kRunFinished;
  std::string run_id;
  std::optional<std::int64_t> member_id;
  std::int64_t round = 0;
  ProgressReport progress;
  nlohmann::json to_json() const;
  static RunFinished from_json(const nlohmann::json& body);
};
// client → broker: a run's ledger. Reply: LedgerReply.
struct LedgerQuery {
  static constexpr MessageType kType = MessageType::kLedgerQuery;
  std::string run_id;
  nlohmann::json to_json() const;
  static LedgerQuery from_json(const nlohmann::json& body);
};
struct LedgerEntry {
  std::string public_key;
  std::int64_t tokens = 0, inner_steps = 0, rounds_accepted = 0, rounds_rejected = 0;
  double compute_seconds = 0;
  std::int64_t bytes_sent = 0;
};
struct LedgerReply {
  static constexpr MessageType kType = MessageType::kAck;
  std::string run_id;
  std::vector<LedgerEntry> ledger;
  nlohmann::json to_json() const;
  static LedgerReply from_json(const nlohmann::json& body);
};
// client → broker: with a run id, that run as the dashboard shows it (only rounds and
// events newer than the ones given; reply: the view's JSON, dashboard.h); without one, every
// run's summary (BrokerCore::status()).
struct StatusQuery {
  static constexpr MessageType kType = MessageType::kStatusQuery;
  std::optional<std::string> run_id;
  std::int64_t rounds_after = -1, events_after = 0;
  nlohmann::json to_json() const;
  static StatusQuery from_json(const nlohmann::json& body);
};
// broker → client: a request was refused.
struct ErrorReply {
  static constexpr MessageType kType = MessageType::kError;
  std::string reason, hint;
  nlohmann::json to_json() const;
  static ErrorReply from_json(const nlohmann::json& body);
};

// A Message of `msg`'s type with its JSON (and `blob`).
template <typename T>
Message message(const T& msg, std::string blob = "") {
  Message m;
  m.type = T::kType;
  m.body = msg.to_json();
  m.blob = std::move(blob);
  return m;
}
// `m` read as a T; throws ProtocolError when m is another type or a field is bad.
template <typename T>
T parse(const Message& m) {
  if (m.type != T::kType)
    throw ProtocolError(std::string("expected a ") + to_string(T::kType) + " message, got " + to_string(m.type));
  return T::from_json(m.body);
}

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
