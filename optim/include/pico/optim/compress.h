// pico/optim/compress.h — lossy compression of a flat fp32 buffer, with error feedback.
//
// For DiLoCo variants that send their pseudo-gradient compressed: what the wire loses this
// round is remembered in a residual e and added to the next round's buffer, so nothing is
// lost for good (Σ over rounds of what was sent + the final e = Σ of the inputs).
//
//   ErrorFeedback   dense, through a WireDtype of common/codec.h (fp16, bf16, uint8):
//                   y = x + e;  send encode(y);  e ← y − decode(encode(y))
//   TopKCompressor  sparse: the k largest |y| with their indices (for an all-gather of
//                   sparse pseudo-gradients); e ← y − what the payload decodes to
//
// Tensors in, tensors out: the trainer moves the bytes (comm/) and accumulates the gathered
// payloads, in rank order so that every contributor sums in the same order. Both keep
// their residual as named state for checkpoints. All arithmetic is fp32, elementwise.
//
// Not here: the reduction itself, weighting of contributors, DeMo's chunked top-k (demo.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pico/common/codec.h"
#include "pico/optim/outer.h"

namespace pico::optim {

class ErrorFeedback {
 public:
  // `name` prefixes the state entry; n values per round, sent as `dtype`.
  ErrorFeedback(std::string name, std::size_t n, WireDtype dtype);

  std::size_t size() const { return n_; }
  WireDtype dtype() const { return dtype_; }
  std::size_t wire_bytes() const { return encoded_size(dtype_, n_); }

  // wire[0, wire_bytes()) ← encode(x + e);  e ← (x + e) − decode(wire). x has size() values.
  void encode(const float* x, std::uint8_t* wire);
  // In place, for a collective that compresses on its own: x ← x + e, and
  // e ← x − decode(encode(x)) (what encoding x as one stream would lose; exact for an
  // all-gather of encode(x), an estimate where a ring re-blocks the buffer).
  void compensate(float* x);

  const std::vector<float>& residual() const { return e_; }
  void reset();
  // {"<name>.residual": (n) fp32 CPU}.
  NamedTensors state() const;
  // Throws pico::Error (nothing changes) on a missing entry, wrong size or non-finite value.
  void load_state(const NamedTensors& state);

 private:
  void add_residual(const float* x, float* y) const;
  void update_residual(const float* y, const std::uint8_t* wire);

  std::string name_;
  std::size_t n_;
  WireDtype dtype_;
  std::vector<float> e_;
  std::vector<float> y_, decoded_;  // scratch, n each
  std::vector<std::uint8_t> wire_;  // scratch for compensate()
};

// Payload of TopKCompressor (little-endian), payload_bytes() long:
//   u32 magic 0x314b5054 ("TPK1"), u8 version (1), u8 value WireDtype, u16 0,
//   u64 n, u64 k, then k u32 indices (strictly ascending), then encode(value_dtype, k values).
class TopKCompressor {
 public:
  // n < 2³² values per round, k in [1, n] kept, values sent as `value_dtype`.
  TopKCompressor(std::string name, std::size_t n, std::size_t k, WireDtype value_dtype = WireDtype::kFloat32);

  std::size_t size() const { return n_; }
  std::size_t k() const { return k_; }
  std::size_t payload_bytes() const;

  // y = x + e; keeps the k largest |y| (ties: lower index), e ← y − decode(payload), which
  // is 0 at a kept index when values travel as fp32. Throws pico::Error (nothing changes)
  // if x + e holds a value that is not finite.
  std::vector<std::uint8_t> compress(const float* x);
  // dst[0, size()) += decode(payload), in payload order. Validates the payload first (size,
  // header, index range and order, finite values) and throws pico::Error naming `source`
  // ("rank 3") without touching dst.
  void decode_add(const std::vector<std::uint8_t>& payload, float* dst, std::string_view source = "payload") const;

  const std::vector<float>& residual() const { return e_; }
  void reset();
  NamedTensors state() const;  // {"<name>.residual": (n) fp32 CPU}
  void load_state(const NamedTensors& state);

 private:
  std::string name_;
  std::size_t n_, k_;
  WireDtype dtype_;
  std::vector<float> e_;
};

}  // namespace pico::optim
