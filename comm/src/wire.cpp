#include "pico/comm/wire.h"

#include <bit>
#include <cstring>

#include "checksum.h"
#include "pico/common/error.h"

namespace pico::comm {

static_assert(std::endian::native == std::endian::little, "the wire header is little-endian; add byte swaps");

const char* to_string(MessageKind k) {
  switch (k) {
    case MessageKind::kReduceScatter:
      return "reduce-scatter";
    case MessageKind::kAllGatherChunk:
      return "all-gather-chunk";
    case MessageKind::kGather:
      return "gather";
    case MessageKind::kBroadcast:
      return "broadcast";
    case MessageKind::kBarrier:
      return "barrier";
    case MessageKind::kAbort:
      return "abort";
    case MessageKind::kGoodbye:
      return "goodbye";
    case MessageKind::kDone:
      return "done";
  }
  return "?";
}

const char* to_string(WireError e) {
  switch (e) {
    case WireError::kOk:
      return "ok";
    case WireError::kShort:
      return "short";
    case WireError::kBadMagic:
      return "magic";
    case WireError::kBadVersion:
      return "version";
    case WireError::kBadKind:
      return "kind";
    case WireError::kBadDtype:
      return "dtype";
    case WireError::kBadLength:
      return "length";
    case WireError::kTooLong:
      return "oversize";
    case WireError::kBadRank:
      return "rank";
    case WireError::kBadRange:
      return "range";
    case WireError::kBadHeaderChecksum:
      return "header-checksum";
    case WireError::kBadPayloadChecksum:
      return "payload-checksum";
  }
  return "?";
}

namespace {

template <typename T>
void put(std::uint8_t* p, std::size_t off, T v) {
  std::memcpy(p + off, &v, sizeof v);
}
template <typename T>
T get(const std::uint8_t* p, std::size_t off) {
  T v;
  std::memcpy(&v, p + off, sizeof v);
  return v;
}

constexpr std::size_t kHeaderCrcOffset = 76;
constexpr std::size_t kPayloadCrcOffset = 72;

WireError fail(WireError e, std::string* detail, const auto&... what) {
  if (detail) *detail = str(what...);
  return e;
}

}  // namespace

void wire_seal(MessageHeader h, const std::uint8_t* payload, std::uint8_t* out) {
  put<std::uint32_t>(out, 0, kWireMagic);
  put<std::uint16_t>(out, 4, kWireVersion);
  put<std::uint8_t>(out, 6, static_cast<std::uint8_t>(h.kind));
  put<std::uint8_t>(out, 7, static_cast<std::uint8_t>(h.dtype));
  put<std::uint64_t>(out, 8, h.run_id);
  put<std::uint64_t>(out, 16, h.round);
  put<std::uint64_t>(out, 24, h.tag);
  put<std::uint32_t>(out, 32, h.epoch);
  put<std::uint16_t>(out, 36, h.src);
  put<std::uint16_t>(out, 38, h.world);
  put<std::uint32_t>(out, 40, h.chunk);
  put<std::uint32_t>(out, 44, h.length);
  put<std::uint64_t>(out, 48, h.offset);
  put<std::uint64_t>(out, 56, h.total);
  put<std::uint64_t>(out, 64, h.count);
  put<std::uint32_t>(out, kPayloadCrcOffset, wire_crc32c(payload, h.length));
  put<std::uint32_t>(out, kHeaderCrcOffset, wire_crc32c(out, kHeaderCrcOffset));
}

void wire_reseal_header(std::uint8_t* header, std::uint16_t src) {
  put<std::uint16_t>(header, 36, src);
  put<std::uint32_t>(header, kHeaderCrcOffset, wire_crc32c(header, kHeaderCrcOffset));
}

WireError wire_decode(const std::uint8_t* data, std::size_t size, const WireLimits& limits, MessageHeader& h,
                      std::string* detail) {
  if (size < kWireHeaderBytes)
    return fail(WireError::kShort, detail, "frame of ", size, " bytes is shorter than the ", kWireHeaderBytes,
                "-byte header");
  if (const auto magic = get<std::uint32_t>(data, 0); magic != kWireMagic)
    return fail(WireError::kBadMagic, detail, "bad magic 0x", std::hex, magic, ", expected 0x", kWireMagic);
  if (const auto version = get<std::uint16_t>(data, 4); version != kWireVersion)
    return fail(WireError::kBadVersion, detail, "protocol version ", version, ", this build speaks ", kWireVersion);
  h.header_crc = get<std::uint32_t>(data, kHeaderCrcOffset);
  if (const auto crc = wire_crc32c(data, kHeaderCrcOffset); crc != h.header_crc)
    return fail(WireError::kBadHeaderChecksum, detail, "header checksum 0x", std::hex, h.header_crc,
                " but the header hashes to 0x", crc);

  const auto kind = get<std::uint8_t>(data, 6);
  if (kind < 1 || kind > 8) return fail(WireError::kBadKind, detail, "unknown message kind ", int{kind});
  h.kind = static_cast<MessageKind>(kind);
  const auto dtype = get<std::uint8_t>(data, 7);
  if (dtype > 3) return fail(WireError::kBadDtype, detail, "unknown wire dtype ", int{dtype});
  h.dtype = static_cast<WireDtype>(dtype);
  h.run_id = get<std::uint64_t>(data, 8);
  h.round = get<std::uint64_t>(data, 16);
  h.tag = get<std::uint64_t>(data, 24);
  h.epoch = get<std::uint32_t>(data, 32);
  h.src = get<std::uint16_t>(data, 36);
  h.world = get<std::uint16_t>(data, 38);
  h.chunk = get<std::uint32_t>(data, 40);
  h.length = get<std::uint32_t>(data, 44);
  h.offset = get<std::uint64_t>(data, 48);
  h.total = get<std::uint64_t>(data, 56);
  h.count = get<std::uint64_t>(data, 64);
  h.payload_crc = get<std::uint32_t>(data, kPayloadCrcOffset);

  if (h.world == 0 || h.src >= h.world || h.chunk >= h.world)
    return fail(WireError::kBadRank, detail, "src ", h.src, " / chunk ", h.chunk, " outside world ", h.world);
  if (h.length != size - kWireHeaderBytes)
    return fail(WireError::kBadLength, detail, "length field says ", h.length, " payload bytes but the frame has ",
                size - kWireHeaderBytes);
  if (h.length > limits.max_payload_bytes)
    return fail(WireError::kTooLong, detail, "payload of ", h.length, " bytes exceeds the limit of ",
                limits.max_payload_bytes);

  switch (h.kind) {
    case MessageKind::kReduceScatter:
    case MessageKind::kAllGatherChunk:
      // Every wire dtype spends at least one byte per value, so count ≤ length bounds count
      // before encoded_size is evaluated.
      if (h.count == 0 || h.count > h.length || h.offset >= h.total || h.count > h.total - h.offset)
        return fail(WireError::kBadRange, detail, "segment [", h.offset, ", +", h.count, ") of ", h.total,
                    " values with ", h.length, " payload bytes");
      if (encoded_size(h.dtype, h.count) != h.length)
        return fail(WireError::kBadLength, detail, h.count, " ", to_string(h.dtype), " values need ",
                    encoded_size(h.dtype, h.count), " bytes, the message has ", h.length);
      break;
    case MessageKind::kGather:
    case MessageKind::kBroadcast:
      if (h.dtype != WireDtype::kFloat32 || h.count != 0 || h.offset > h.total || h.length > h.total - h.offset ||
          (h.length == 0 && h.total != 0))
        return fail(WireError::kBadRange, detail, "byte segment [", h.offset, ", +", h.length, ") of ", h.total,
                    " (count ", h.count, ", dtype ", int{dtype}, ")");
      break;
    case MessageKind::kBarrier:
      if (h.dtype != WireDtype::kFloat32 || h.length != 0 || h.offset != 0 || h.total != 0 || h.count != 0)
        return fail(WireError::kBadRange, detail, "barrier with payload fields set");
      break;
    case MessageKind::kDone:
      if (h.dtype != WireDtype::kFloat32 || h.length != 0 || h.offset != 0 || h.total != 0 || h.count != 0 ||
          h.chunk != 0)
        return fail(WireError::kBadRange, detail, "done with payload fields set");
      break;
    case MessageKind::kAbort:
    case MessageKind::kGoodbye:
      if (h.dtype != WireDtype::kFloat32 || h.length > kWireMaxReasonBytes || h.offset != 0 || h.total != 0 ||
          h.count != 0 || h.chunk != 0)
        return fail(WireError::kBadRange, detail, to_string(h.kind), " with fields set or a reason of ", h.length,
                    " bytes");
      break;
  }
  if (const auto crc = wire_crc32c(data + kWireHeaderBytes, h.length); crc != h.payload_crc)
    return fail(WireError::kBadPayloadChecksum, detail, "payload checksum 0x", std::hex, h.payload_crc, " but the ",
                std::dec, h.length, " payload bytes hash to 0x", std::hex, crc);
  return WireError::kOk;
}

}  // namespace pico::comm
