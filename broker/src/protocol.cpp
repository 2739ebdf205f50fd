#include "pico/broker/protocol.h"

#include <zmq.h>

#include <cmath>
#include <cstring>

#include "pico/common/error.h"
#include "pico/common/hash.h"

namespace pico::broker {
namespace {

template <typename T>
void put(std::string& s, std::size_t off, T v) {
  std::memcpy(s.data() + off, &v, sizeof v);
}
template <typename T>
T get(const std::uint8_t* p, std::size_t off) {
  T v;
  std::memcpy(&v, p + off, sizeof v);
  return v;
}

}  // namespace

const char* to_string(MessageType t) {
  switch (t) {
    case MessageType::kAck:
      return "ack";
    case MessageType::kError:
      return "error";
    case MessageType::kCreateRun:
      return "create_run";
    case MessageType::kJoin:
      return "join";
    case MessageType::kHeartbeat:
      return "heartbeat";
    case MessageType::kReady:
      return "ready";
    case MessageType::kRoundStart:
      return "round_start";
    case MessageType::kRoundResult:
      return "round_result";
    case MessageType::kSnapshotRequest:
      return "snapshot_request";
    case MessageType::kSnapshotPut:
      return "snapshot_put";
    case MessageType::kSnapshotGet:
      return "snapshot_get";
    case MessageType::kSnapshotReady:
      return "snapshot_ready";
    case MessageType::kResync:
      return "resync";
    case MessageType::kEvicted:
      return "evicted";
    case MessageType::kLeave:
      return "leave";
    case MessageType::kLedgerQuery:
      return "ledger_query";
    case MessageType::kStatusQuery:
      return "status_query";
    case MessageType::kRunFinished:
      return "run_finished";
    case MessageType::kRunInfo:
      return "run_info";
  }
  return "?";
}

std::string encode_message(const Message& m) {
  const std::string json = m.body.dump();
  PICO_CHECK_LE(json.size(), kMaxJsonBytes, "broker message JSON too large");
  PICO_CHECK_LE(m.blob.size(), kMaxBlobBytes, "broker message blob too large");
  std::string out(kBrokerHeaderBytes, '\0');
  out += json;
  out += m.blob;
  put<std::uint32_t>(out, 0, kBrokerMagic);
  put<std::uint16_t>(out, 4, kBrokerVersion);
  put<std::uint16_t>(out, 6, static_cast<std::uint16_t>(m.type));
  put<std::uint64_t>(out, 8, m.request_id);
  put<std::uint32_t>(out, 16, static_cast<std::uint32_t>(json.size()));
  put<std::uint32_t>(out, 20, static_cast<std::uint32_t>(m.blob.size()));
  put<std::uint32_t>(out, 24, crc32c(out.data() + kBrokerHeaderBytes, out.size() - kBrokerHeaderBytes));
  put<std::uint32_t>(out, 28, crc32c(out.data(), 28));
  return out;
}

std::optional<Message> decode_message(const std::uint8_t* data, std::size_t size, std::string& why) {
  if (size < kBrokerHeaderBytes) {
    why = str("short message: ", size, " bytes, a header is ", kBrokerHeaderBytes);
    return std::nullopt;
  }
  if (get<std::uint32_t>(data, 0) != kBrokerMagic) {
    why = "bad magic (not a pico broker message)";
    return std::nullopt;
  }
  const auto version = get<std::uint16_t>(data, 4);
  if (version != kBrokerVersion) {
    why = str("protocol version ", version, ", this broker speaks ", kBrokerVersion);
    return std::nullopt;
  }
  if (get<std::uint32_t>(data, 28) != crc32c(data, 28)) {
    why = "header checksum mismatch";
    return std::nullopt;
  }
  const auto type = get<std::uint16_t>(data, 6);
  if (type < static_cast<std::uint16_t>(MessageType::kAck) ||
      type > static_cast<std::uint16_t>(MessageType::kRunInfo)) {
    why = str("unknown message type ", type);
    return std::nullopt;
  }
  const auto json_len = get<std::uint32_t>(data, 16);
  const auto blob_len = get<std::uint32_t>(data, 20);
  if (json_len > kMaxJsonBytes || blob_len > kMaxBlobBytes) {
    why = str("oversize message: json ", json_len, " blob ", blob_len, " bytes");
    return std::nullopt;
  }
  if (static_cast<std::uint64_t>(kBrokerHeaderBytes) + json_len + blob_len != size) {
    why = str("length fields (json ", json_len, ", blob ", blob_len, ") disagree with the frame size ", size);
    return std::nullopt;
  }
  if (get<std::uint32_t>(data, 24) != crc32c(data + kBrokerHeaderBytes, size - kBrokerHeaderBytes)) {
    why = "body checksum mismatch";
    return std::nullopt;
  }
  Message m;
  m.type = static_cast<MessageType>(type);
  m.request_id = get<std::uint64_t>(data, 8);
  const char* json = reinterpret_cast<const char*>(data + kBrokerHeaderBytes);
  m.body = nlohmann::json::parse(json, json + json_len, nullptr, /*allow_exceptions=*/false);
  if (m.body.is_discarded() || !m.body.is_object()) {
    why = "body is not a JSON object";
    return std::nullopt;
  }
  m.blob.assign(json + json_len, blob_len);
  return m;
}

// ---------------------------------------------------------------------------------------
// Reading and writing the message structs.

namespace {

constexpr std::size_t kIdLen = 64;           // run ids, SHA-256 hex
constexpr std::size_t kKeyLen = 40;          // Z85 public keys
constexpr std::size_t kAddressLen = 64;      // an IP address as text
constexpr std::size_t kShortText = 256;      // endpoints, devices, reasons
constexpr std::size_t kLongText = 64 << 10;  // errors, hints, commands

// A message body's fields, read with the message's name in every error.
class Fields {
 public:
  Fields(const nlohmann::json& body, const char* what) : body_(body), what_(what) {
    if (!body_.is_object()) throw ProtocolError(str(what_, " message body is not an object"));
  }
  const nlohmann::json& at(const char* name) const {
    const auto it = body_.find(name);
    if (it == body_.end()) throw ProtocolError(str(what_, " message lacks field '", name, "'"));
    return *it;
  }
  bool has(const char* name) const {
    const auto it = body_.find(name);
    return it != body_.end() && !it->is_null();
  }
  std::string text(const char* name, std::size_t max_len) const { return text_of(at(name), name, max_len); }
  std::string text_or(const char* name, std::size_t max_len) const { return has(name) ? text(name, max_len) : ""; }
  std::int64_t integer(const char* name) const { return integer_of(at(name), name); }
  std::int64_t integer_or(const char* name, std::int64_t fallback) const {
    return has(name) ? integer(name) : fallback;
  }
  std::optional<std::int64_t> optional_integer(const char* name) const {
    return has(name) ? std::optional<std::int64_t>(integer(name)) : std::nullopt;
  }
  double number(const char* name) const {
    const auto& f = at(name);
    if (!f.is_number()) throw ProtocolError(str("field '", name, "' of ", what_, " is not a number"));
    return f.get<double>();
  }
  bool boolean(const char* name) const {
    const auto& f = at(name);
    if (!f.is_boolean()) throw ProtocolError(str("field '", name, "' of ", what_, " is not a boolean"));
    return f.get<bool>();
  }
  std::string text_of(const nlohmann::json& f, const char* name, std::size_t max_len) const {
    if (!f.is_string()) throw ProtocolError(str("field '", name, "' of ", what_, " is not a string"));
    const auto& v = f.get_ref<const std::string&>();
    if (v.size() > max_len)
      throw ProtocolError(str("field '", name, "' of ", what_, " is longer than ", max_len, " bytes"));
    return v;
  }
  std::int64_t integer_of(const nlohmann::json& f, const char* name) const {
    if (!f.is_number_integer()) throw ProtocolError(str("field '", name, "' of ", what_, " is not an integer"));
    return f.get<std::int64_t>();
  }
  const char* what() const { return what_; }

 private:
  const nlohmann::json& body_;
  const char* what_;
};

void require(bool ok, const char* what, const std::string& why) {
  if (!ok) throw ProtocolError(str(what, ": ", why));
}

}  // namespace

const char* to_string(RunStatus s) {
  return s == RunStatus::kActive ? "active" : "finished";
}
const char* to_string(MemberStatus s) {
  switch (s) {
    case MemberStatus::kActive:
      return "active";
    case MemberStatus::kEvicted:
      return "evicted";
    case MemberStatus::kLeft:
      return "left";
  }
  return "?";
}
const char* to_string(RoundStatus s) {
  switch (s) {
    case RoundStatus::kOpen:
      return "open";
    case RoundStatus::kDone:
      return "done";
    case RoundStatus::kFailed:
      return "failed";
  }
  return "?";
}
RunStatus parse_run_status(const std::string& s) {
  if (s == "active") return RunStatus::kActive;
  if (s == "finished") return RunStatus::kFinished;
  throw ProtocolError(str("unknown run status '", s, "'"));
}
MemberStatus parse_member_status(const std::string& s) {
  if (s == "active") return MemberStatus::kActive;
  if (s == "evicted") return MemberStatus::kEvicted;
  if (s == "left") return MemberStatus::kLeft;
  throw ProtocolError(str("unknown member status '", s, "'"));
}
RoundStatus parse_round_status(const std::string& s) {
  if (s == "open") return RoundStatus::kOpen;
  if (s == "done") return RoundStatus::kDone;
  if (s == "failed") return RoundStatus::kFailed;
  throw ProtocolError(str("unknown round status '", s, "'"));
}

void ProgressReport::write(nlohmann::json& body) const {
  if (loss && std::isfinite(*loss)) body["loss"] = *loss;
  if (val_loss && val_round && std::isfinite(*val_loss)) body["val_loss"] = *val_loss, body["val_round"] = *val_round;
}

ProgressReport ProgressReport::read(const nlohmann::json& body) {
  ProgressReport p;
  auto number = [&](const char* name) -> std::optional<double> {
    const auto it = body.find(name);
    if (it == body.end() || !it->is_number()) return std::nullopt;
    const double v = it->get<double>();
    return std::isfinite(v) ? std::optional<double>(v) : std::nullopt;
  };
  p.loss = number("loss");
  p.val_loss = number("val_loss");
  const auto it = body.find("val_round");
  if (it != body.end() && it->is_number_integer()) p.val_round = it->get<std::int64_t>();
  if (!p.val_round) p.val_loss.reset();  // a validation loss means nothing without its round
  if (!p.val_loss) p.val_round.reset();
  return p;
}

nlohmann::json CreateRun::to_json() const {
  return {{"run_id", run_id},
          {"config_yaml", config_yaml},
          {"dataset_hash", dataset_hash},
          {"num_shards", num_shards},
          {"private", is_private},
          {"min_members", min_members},
          {"token_sha256", token_sha256},
          {"theta0_hash", theta0_hash},
          {"allow", allow},
          {"prepare_command", prepare_command},
          {"algorithm", algorithm},
          {"model_params", model_params}};
}
CreateRun CreateRun::from_json(const nlohmann::json& body) {
  const Fields f(body, "create_run");
  CreateRun m;
  m.run_id = f.text("run_id", kIdLen);
  m.config_yaml = f.text("config_yaml", kMaxJsonBytes);
  m.dataset_hash = f.text("dataset_hash", kIdLen);
  m.num_shards = f.integer("num_shards");
  m.is_private = f.boolean("private");
  m.min_members = f.integer_or("min_members", 1);
  m.token_sha256 = f.text_or("token_sha256", kIdLen);
  m.theta0_hash = f.text("theta0_hash", kIdLen);
  if (f.has("allow")) {
    const auto& a = f.at("allow");
    require(a.is_array(), "create_run", "field 'allow' is not a list");
    for (const auto& k : a) m.allow.push_back(f.text_of(k, "allow", kKeyLen));
  }
  m.prepare_command = f.text_or("prepare_command", kLongText);
  m.algorithm = f.text_or("algorithm", 200);
  m.model_params = f.integer_or("model_params", 0);
  require(m.num_shards >= 1, "create_run", "num_shards must be >= 1");
  require(m.min_members >= 1 && m.min_members <= 100000, "create_run", "min_members must be in [1, 100000]");
  require(m.model_params >= 0, "create_run", "model_params must be >= 0");
  return m;
}

nlohmann::json CreateRunReply::to_json() const {
  nlohmann::json j = {{"run_id", run_id}, {"round", round}, {"existing", existing}, {"status", to_string(status)}};
  if (!seen_from.empty()) j["seen_from"] = seen_from;
  if (!relay.empty()) j["relay"] = relay;
  return j;
}
CreateRunReply CreateRunReply::from_json(const nlohmann::json& body) {
  const Fields f(body, "create_run reply");
  return {f.text("run_id", kIdLen),
          f.integer("round"),
          f.boolean("existing"),
          parse_run_status(f.text("status", 16)),
          f.text_or("seen_from", kAddressLen),
          f.text_or("relay", kShortText)};
}

nlohmann::json RunInfo::to_json() const {
  return {{"run_id", run_id}};
}
RunInfo RunInfo::from_json(const nlohmann::json& body) {
  return {Fields(body, "run_info").text("run_id", kIdLen)};
}

nlohmann::json RunInfoReply::to_json() const {
  nlohmann::json j = {{"run_id", run_id},
                      {"config_yaml", config_yaml},
                      {"dataset_hash", dataset_hash},
                      {"num_shards", num_shards},
                      {"round", round},
                      {"min_members", min_members},
                      {"private", is_private},
                      {"prepare_command", prepare_command}};
  if (!seen_from.empty()) j["seen_from"] = seen_from;
  if (!relay.empty()) j["relay"] = relay;
  return j;
}
RunInfoReply RunInfoReply::from_json(const nlohmann::json& body) {
  const Fields f(body, "run_info reply");
  RunInfoReply m;
  m.run_id = f.text("run_id", kIdLen);
  m.config_yaml = f.text("config_yaml", kMaxJsonBytes);
  m.dataset_hash = f.text("dataset_hash", kIdLen);
  m.num_shards = f.integer("num_shards");
  m.round = f.integer("round");
  m.min_members = f.integer("min_members");
  m.is_private = f.boolean("private");
  m.prepare_command = f.text_or("prepare_command", kLongText);
  m.seen_from = f.text_or("seen_from", kAddressLen);
  m.relay = f.text_or("relay", kShortText);
  return m;
}

nlohmann::json Join::to_json() const {
  nlohmann::json j = {
      {"run_id", run_id}, {"dataset_hash", dataset_hash}, {"device", device}, {"endpoint", endpoint}, {"token", token}};
  if (relayed) j["relayed"] = true;
  return j;
}
Join Join::from_json(const nlohmann::json& body) {
  const Fields f(body, "join");
  return {f.text("run_id", kIdLen),       f.text("dataset_hash", kIdLen), f.text("device", kShortText),
          f.text("endpoint", kShortText), f.text_or("token", kIdLen),     f.has("relayed") && f.boolean("relayed")};
}

nlohmann::json JoinReply::to_json() const {
  return {{"member_id", member_id},     {"slot", slot},
          {"num_shards", num_shards},   {"round", round},
          {"theta0_hash", theta0_hash}, {"needs_snapshot", needs_snapshot}};
}
JoinReply JoinReply::from_json(const nlohmann::json& body) {
  const Fields f(body, "join reply");
  return {f.integer("member_id"),        f.integer("slot"),          f.integer("num_shards"), f.integer("round"),
          f.text("theta0_hash", kIdLen), f.boolean("needs_snapshot")};
}

nlohmann::json Heartbeat::to_json() const {
  nlohmann::json j = {{"run_id", run_id}, {"member_id", member_id}, {"step", step}, {"tokens_per_s", tokens_per_s}};
  j["base_round"] = base_round ? nlohmann::json(*base_round) : nlohmann::json(nullptr);
  progress.write(j);
  return j;
}
Heartbeat Heartbeat::from_json(const nlohmann::json& body) {
  const Fields f(body, "heartbeat");
  Heartbeat m;
  m.run_id = f.text("run_id", kIdLen);
  m.member_id = f.integer("member_id");
  (void)f.at("base_round");  // present: null means "waiting for a snapshot"
  m.base_round = f.optional_integer("base_round");
  require(!m.base_round || *m.base_round >= 0, "heartbeat", "base_round must be >= 0 or null");
  m.step = f.integer("step");
  m.tokens_per_s = f.number("tokens_per_s");
  m.progress = ProgressReport::read(body);
  return m;
}

nlohmann::json RoundResult::to_json() const {
  nlohmann::json j = {{"run_id", run_id}, {"member_id", member_id},  {"round", round}, {"attempt", attempt},
                      {"ok", ok},         {"bytes_sent", bytes_sent}};
  if (ok)
    j["theta_hash"] = theta_hash;
  else
    j["error"] = error;
  if (!unreachable.empty()) j["unreachable"] = unreachable;
  return j;
}
RoundResult RoundResult::from_json(const nlohmann::json& body) {
  const Fields f(body, "round_result");
  RoundResult m;
  m.run_id = f.text_or("run_id", kIdLen);  // absent in the copy a Ready carries
  m.member_id = f.integer_or("member_id", 0);
  m.round = f.integer("round");
  m.attempt = f.integer("attempt");
  m.ok = f.boolean("ok");
  if (m.ok)
    m.theta_hash = f.text("theta_hash", kIdLen);
  else
    m.error = f.text_or("error", kLongText);
  m.bytes_sent = f.integer("bytes_sent");
  if (f.has("unreachable")) {
    const auto& a = f.at("unreachable");
    require(a.is_array() && a.size() <= 2, "round_result", "field 'unreachable' is not a list of at most 2 members");
    for (const auto& id : a) m.unreachable.push_back(f.integer_of(id, "unreachable"));
  }
  return m;
}

nlohmann::json Ready::to_json() const {
  nlohmann::json j = {{"run_id", run_id},
                      {"member_id", member_id},
                      {"round", round},
                      {"base_round", base_round},
                      {"tokens", tokens},
                      {"inner_steps", inner_steps},
                      {"compute_seconds", compute_seconds},
                      {"delta_norm", delta_norm},
                      {"finite", finite}};
  progress.write(j);
  if (last_result) j["last_result"] = last_result->to_json();
  return j;
}
Ready Ready::from_json(const nlohmann::json& body) {
  const Fields f(body, "ready");
  Ready m;
  m.run_id = f.text("run_id", kIdLen);
  m.member_id = f.integer("member_id");
  m.round = f.integer("round");
  m.base_round = f.integer("base_round");
  m.tokens = f.integer("tokens");
  m.inner_steps = f.integer("inner_steps");
  m.compute_seconds = f.number("compute_seconds");
  m.delta_norm = f.number("delta_norm");
  m.finite = f.boolean("finite") && std::isfinite(m.delta_norm);
  m.progress = ProgressReport::read(body);
  if (f.has("last_result")) m.last_result = RoundResult::from_json(f.at("last_result"));
  require(m.tokens >= 0 && m.inner_steps >= 0, "ready", "negative tokens or steps");
  require(m.round >= 1 && m.base_round >= 0, "ready", "round must be >= 1 and base_round >= 0");
  return m;
}

nlohmann::json ReadyReply::to_json() const {
  nlohmann::json j = {{"round", round}};
  if (retry_after_s) j["retry_after_s"] = *retry_after_s;
  return j;
}
ReadyReply ReadyReply::from_json(const nlohmann::json& body) {
  const Fields f(body, "ready reply");
  ReadyReply m;
  m.round = f.integer("round");
  if (f.has("retry_after_s")) m.retry_after_s = f.number("retry_after_s");
  return m;
}

nlohmann::json RoundStart::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& mm : members)
    list.push_back({{"member_id", mm.member_id},
                    {"rank", mm.rank},
                    {"endpoint", mm.endpoint},
                    {"public_key", mm.public_key},
                    {"weight", mm.weight}});
  return {{"run_id", run_id}, {"round", round}, {"attempt", attempt}, {"members", list}};
}
RoundStart RoundStart::from_json(const nlohmann::json& body) {
  const Fields f(body, "round_start");
  RoundStart m;
  m.run_id = f.text("run_id", kIdLen);
  m.round = f.integer("round");
  m.attempt = f.integer("attempt");
  const auto& list = f.at("members");
  require(list.is_array() && !list.empty(), "round_start", "members is not a non-empty list");
  for (const auto& e : list) {
    const Fields g(e, "round_start member");
    RoundMember mm;
    mm.member_id = g.integer("member_id");
    const std::int64_t rank = g.integer("rank");
    require(rank == static_cast<std::int64_t>(m.members.size()), "round_start", "members are not listed by rank");
    mm.rank = static_cast<int>(rank);
    mm.endpoint = g.text("endpoint", kShortText);
    mm.public_key = g.text("public_key", kKeyLen);
    mm.weight = g.number("weight");
    require(mm.weight >= 0 && std::isfinite(mm.weight), "round_start", "a weight is negative or not finite");
    m.members.push_back(std::move(mm));
  }
  return m;
}

nlohmann::json SnapshotRequest::to_json() const {
  return {{"run_id", run_id}, {"round", round}, {"chunk_bytes", chunk_bytes}};
}
SnapshotRequest SnapshotRequest::from_json(const nlohmann::json& body) {
  const Fields f(body, "snapshot_request");
  SnapshotRequest m{f.text("run_id", kIdLen), f.integer("round"), f.integer("chunk_bytes")};
  require(m.chunk_bytes >= 1 && m.chunk_bytes <= kMaxBlobBytes, "snapshot_request", "chunk_bytes out of range");
  return m;
}

nlohmann::json SnapshotPut::to_json() const {
  return {{"run_id", run_id}, {"member_id", member_id}, {"round", round},  {"index", index},
          {"count", count},   {"bytes", bytes},         {"sha256", sha256}};
}
SnapshotPut SnapshotPut::from_json(const nlohmann::json& body) {
  const Fields f(body, "snapshot_put");
  return {f.text("run_id", kIdLen), f.integer("member_id"), f.integer("round"),      f.integer("index"),
          f.integer("count"),       f.integer("bytes"),     f.text("sha256", kIdLen)};
}
nlohmann::json SnapshotPutReply::to_json() const {
  return {{"index", index}};
}
SnapshotPutReply SnapshotPutReply::from_json(const nlohmann::json& body) {
  return {Fields(body, "snapshot_put reply").integer("index")};
}

nlohmann::json SnapshotGet::to_json() const {
  return {{"run_id", run_id}, {"member_id", member_id}, {"round", round}, {"index", index}};
}
SnapshotGet SnapshotGet::from_json(const nlohmann::json& body) {
  const Fields f(body, "snapshot_get");
  return {f.text("run_id", kIdLen), f.integer("member_id"), f.integer("round"), f.integer("index")};
}
nlohmann::json SnapshotGetReply::to_json() const {
  return {{"round", round}, {"index", index}, {"chunks", chunks}, {"bytes", bytes}, {"sha256", sha256}};
}
SnapshotGetReply SnapshotGetReply::from_json(const nlohmann::json& body) {
  const Fields f(body, "snapshot_get reply");
  return {f.integer("round"), f.integer("index"), f.integer("chunks"), f.integer("bytes"), f.text("sha256", kIdLen)};
}

nlohmann::json SnapshotReady::to_json() const {
  return {{"run_id", run_id},           {"round", round},  {"bytes", bytes}, {"chunks", chunks},
          {"chunk_bytes", chunk_bytes}, {"sha256", sha256}};
}
SnapshotReady SnapshotReady::from_json(const nlohmann::json& body) {
  const Fields f(body, "snapshot_ready");
  SnapshotReady m{f.text("run_id", kIdLen), f.integer("round"),       f.integer("bytes"),
                  f.integer("chunks"),      f.integer("chunk_bytes"), f.text("sha256", kIdLen)};
  require(m.chunks >= 1 && m.chunks <= 1 << 20 && m.bytes >= 0, "snapshot_ready", "chunks or bytes out of range");
  return m;
}

nlohmann::json Resync::to_json() const {
  return {{"run_id", run_id}, {"round", round}, {"reason", reason}};
}
Resync Resync::from_json(const nlohmann::json& body) {
  const Fields f(body, "resync");
  return {f.text("run_id", kIdLen), f.integer("round"), f.text("reason", kLongText)};
}

nlohmann::json Evicted::to_json() const {
  nlohmann::json j = {{"run_id", run_id}, {"reason", reason}, {"replaced", replaced}};
  if (unreachable) j["unreachable"] = true;
  return j;
}
Evicted Evicted::from_json(const nlohmann::json& body) {
  const Fields f(body, "evicted");
  return {f.text("run_id", kIdLen), f.text("reason", kLongText), f.has("replaced") && f.boolean("replaced"),
          f.has("unreachable") && f.boolean("unreachable")};
}

nlohmann::json Leave::to_json() const {
  return {{"run_id", run_id}, {"member_id", member_id}};
}
Leave Leave::from_json(const nlohmann::json& body) {
  const Fields f(body, "leave");
  return {f.text("run_id", kIdLen), f.integer("member_id")};
}

nlohmann::json RunFinished::to_json() const {
  nlohmann::json j = {{"run_id", run_id}, {"round", round}};
  if (member_id) j["member_id"] = *member_id;
  progress.write(j);
  return j;
}
RunFinished RunFinished::from_json(const nlohmann::json& body) {
  const Fields f(body, "run_finished");
  RunFinished m;
  m.run_id = f.text("run_id", kIdLen);
  m.member_id = f.optional_integer("member_id");
  m.round = f.integer("round");
  m.progress = ProgressReport::read(body);
  return m;
}

nlohmann::json LedgerQuery::to_json() const {
  return {{"run_id", run_id}};
}
LedgerQuery LedgerQuery::from_json(const nlohmann::json& body) {
  return {Fields(body, "ledger_query").text("run_id", kIdLen)};
}

nlohmann::json LedgerReply::to_json() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : ledger)
    rows.push_back({{"public_key", r.public_key},
                    {"tokens", r.tokens},
                    {"inner_steps", r.inner_steps},
                    {"rounds_accepted", r.rounds_accepted},
                    {"rounds_rejected", r.rounds_rejected},
                    {"compute_seconds", r.compute_seconds},
                    {"bytes_sent", r.bytes_sent}});
  return {{"run_id", run_id}, {"ledger", rows}};
}
LedgerReply LedgerReply::from_json(const nlohmann::json& body) {
  const Fields f(body, "ledger reply");
  LedgerReply m;
  m.run_id = f.text("run_id", kIdLen);
  const auto& rows = f.at("ledger");
  require(rows.is_array(), "ledger reply", "ledger is not a list");
  for (const auto& r : rows) {
    const Fields g(r, "ledger row");
    m.ledger.push_back({g.text("public_key", kKeyLen), g.integer("tokens"), g.integer("inner_steps"),
                        g.integer("rounds_accepted"), g.integer("rounds_rejected"), g.number("compute_seconds"),
                        g.integer("bytes_sent")});
  }
  return m;
}

nlohmann::json StatusQuery::to_json() const {
  nlohmann::json j = {{"rounds_after", rounds_after}, {"events_after", events_after}};
  if (run_id) j["run_id"] = *run_id;
  return j;
}
StatusQuery StatusQuery::from_json(const nlohmann::json& body) {
  const Fields f(body, "status_query");
  StatusQuery m;
  if (f.has("run_id")) m.run_id = f.text("run_id", kIdLen);
  m.rounds_after = f.integer_or("rounds_after", -1);
  m.events_after = f.integer_or("events_after", 0);
  return m;
}

nlohmann::json ErrorReply::to_json() const {
  return {{"reason", reason}, {"hint", hint}};
}
ErrorReply ErrorReply::from_json(const nlohmann::json& body) {
  const Fields f(body, "error");
  return {f.text("reason", kLongText), f.text_or("hint", kLongText)};
}

bool is_valid_run_id(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  return true;
}

JoinCode parse_join_code(const std::string& code, bool allow_broker_code) {
  const char* kHint =
      "copy the whole code printed by the run's `pico train`, e.g. pico://203.0.113.5:7070/my-run?key=…";
  const std::string prefix = "pico://";
  if (code.rfind(prefix, 0) != 0) throw Error(str("bad join code '", code, "': it must start with pico://"), kHint);
  JoinCode jc;
  std::string rest = code.substr(prefix.size());
  const auto slash = rest.find('/');
  if (slash == std::string::npos) throw Error(str("bad join code '", code, "': no /RUN_ID after the address"), kHint);
  const std::string hostport = rest.substr(0, slash);
  rest = rest.substr(slash + 1);
  const auto colon = hostport.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw Error(str("bad join code '", code, "': the address must be HOST:PORT"), kHint);
  jc.host = hostport.substr(0, colon);
  if (jc.host.size() > 2 && jc.host.front() == '[' && jc.host.back() == ']')
    jc.host = jc.host.substr(1, jc.host.size() - 2);
  try {
    std::size_t used = 0;
    jc.port = std::stoi(hostport.substr(colon + 1), &used);
    if (used != hostport.size() - colon - 1) throw std::invalid_argument("port");
  } catch (const std::exception&) {
    throw Error(str("bad join code '", code, "': port '", hostport.substr(colon + 1), "' is not a number"), kHint);
  }
  if (jc.port < 1 || jc.port > 65535)
    throw Error(str("bad join code '", code, "': port ", jc.port, " out of range"), kHint);
  const auto q = rest.find('?');
  jc.run_id = rest.substr(0, q);
  if (jc.run_id.empty() && !allow_broker_code)
    throw Error(str("'", code, "' is a broker code, not a join code: it names no run"),
                "join a run with the code its `pico train` printed (pico://HOST:PORT/RUN?key=…); a broker code is for "
                "`pico train --config … --broker CODE` and `pico ledger RUN --broker CODE`");
  if (!jc.run_id.empty() && !is_valid_run_id(jc.run_id))
    throw Error(str("bad join code '", code, "': run id '", jc.run_id, "' is not [A-Za-z0-9_-]{1,64}"), kHint);
  if (q == std::string::npos)
    throw Error(str("bad join code '", code, "': no ?key=… (the broker's public key)"), kHint);
  std::string key_hex;
  std::string query = rest.substr(q + 1);
  std::size_t pos = 0;
  while (pos <= query.size()) {
    const auto amp = query.find('&', pos);
    const std::string kv = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    const auto eq = kv.find('=');
    const std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (k == "key")
      key_hex = v;
    else if (k == "token")
      jc.token = v;
    else if (!k.empty())
      throw Error(str("bad join code '", code, "': unknown parameter '", k, "'"), kHint);
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  if (key_hex.size() != 64 || key_hex.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw Error(str("bad join code '", code, "': key must be 64 lowercase hex digits"), kHint);
  std::uint8_t raw[32];
  for (int i = 0; i < 32; ++i) raw[i] = static_cast<std::uint8_t>(std::stoi(key_hex.substr(2 * i, 2), nullptr, 16));
  char z85[41];
  zmq_z85_encode(z85, raw, 32);
  jc.broker_key = z85;
  return jc;
}

std::string format_join_code(const JoinCode& jc) {
  std::uint8_t raw[32];
  PICO_CHECK(jc.broker_key.size() == 40 && zmq_z85_decode(raw, jc.broker_key.c_str()) != nullptr, "bad broker key");
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (auto b : raw) {
    hex += kHex[b >> 4];
    hex += kHex[b & 15];
  }
  const bool v6 = jc.host.find(':') != std::string::npos;
  std::string out = str("pico://", v6 ? "[" : "", jc.host, v6 ? "]" : "", ":", jc.port, "/", jc.run_id, "?key=", hex);
  if (!jc.token.empty()) out += "&token=" + jc.token;
  return out;
}

}  // namespace pico::broker
