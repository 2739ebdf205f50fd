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

const nlohmann::json& field(const Message& m, const char* name) {
  auto it = m.body.find(name);
  if (it == m.body.end()) throw ProtocolError(str(to_string(m.type), " message lacks field '", name, "'"));
  return *it;
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

std::string get_string(const Message& m, const char* name, std::size_t max_len) {
  const auto& f = field(m, name);
  if (!f.is_string()) throw ProtocolError(str("field '", name, "' of ", to_string(m.type), " is not a string"));
  const auto& s = f.get_ref<const std::string&>();
  if (s.size() > max_len) throw ProtocolError(str("field '", name, "' is longer than ", max_len, " bytes"));
  return s;
}

std::int64_t get_int(const Message& m, const char* name) {
  const auto& f = field(m, name);
  if (!f.is_number_integer())
    throw ProtocolError(str("field '", name, "' of ", to_string(m.type), " is not an integer"));
  return f.get<std::int64_t>();
}

double get_double(const Message& m, const char* name) {
  const auto& f = field(m, name);
  if (!f.is_number()) throw ProtocolError(str("field '", name, "' of ", to_string(m.type), " is not a number"));
  return f.get<double>();
}

bool get_bool(const Message& m, const char* name) {
  const auto& f = field(m, name);
  if (!f.is_boolean()) throw ProtocolError(str("field '", name, "' of ", to_string(m.type), " is not a boolean"));
  return f.get<bool>();
}

ProgressReport read_progress(const Message& m) {
  ProgressReport p;
  auto number = [&](const char* name) -> std::optional<double> {
    const auto it = m.body.find(name);
    if (it == m.body.end() || !it->is_number()) return std::nullopt;
    const double v = it->get<double>();
    return std::isfinite(v) ? std::optional<double>(v) : std::nullopt;
  };
  p.loss = number("loss");
  p.val_loss = number("val_loss");
  const auto it = m.body.find("val_round");
  if (it != m.body.end() && it->is_number_integer()) p.val_round = it->get<std::int64_t>();
  if (!p.val_round) p.val_loss.reset();  // a validation loss means nothing without its round
  return p;
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
