#include "pico/comm/ring.h"

#include <algorithm>

#include "pico/common/error.h"

namespace pico::comm {

// n·c may exceed 64 bits for huge n; the product is formed in 128 bits.
__extension__ typedef unsigned __int128 Wide;

std::pair<std::size_t, std::size_t> ring_chunk(std::size_t n, int world_size, int c) {
  PICO_CHECK(world_size > 0 && c >= 0 && c < world_size, "chunk ", c, " of ", world_size);
  const auto w = static_cast<Wide>(world_size);
  const auto b = static_cast<std::size_t>(static_cast<Wide>(n) * static_cast<unsigned>(c) / w);
  const auto e = static_cast<std::size_t>(static_cast<Wide>(n) * static_cast<unsigned>(c + 1) / w);
  return {b, e};
}

void ring_reduce_reference(WireDtype wire, const std::vector<const float*>& inputs, int chunk, std::size_t begin,
                           std::size_t end, float* out) {
  const int w = static_cast<int>(inputs.size());
  PICO_CHECK(w > 0);
  // Blocks aligned to kUInt8Block from the chunk start: the codec's quantization blocks.
  std::vector<std::uint8_t> wire_buf(encoded_size(wire, std::min(kUInt8Block, end - begin)));
  for (std::size_t off = begin; off < end; off += kUInt8Block) {
    const std::size_t m = std::min(kUInt8Block, end - off);
    float* a = out + (off - begin);
    std::copy(inputs[chunk] + off, inputs[chunk] + off + m, a);
    for (int k = 1; k < w; ++k) {
      const float* own = inputs[(chunk + k) % w] + off;
      if (wire == WireDtype::kFloat32) {
        for (std::size_t i = 0; i < m; ++i) a[i] = own[i] + a[i];
      } else {
        encode(wire, a, m, wire_buf.data());
        std::copy(own, own + m, a);
        decode_add(wire, wire_buf.data(), m, a);  // own + decode(encode(a))
      }
    }
    if (wire != WireDtype::kFloat32) {
      encode(wire, a, m, wire_buf.data());
      decode(wire, wire_buf.data(), m, a);
    }
  }
}

std::size_t ring_allreduce_payload_bytes(WireDtype wire, std::size_t n, int world_size, int rank) {
  if (world_size <= 1) return 0;
  std::size_t bytes = 0;
  for (int s = 0; s < world_size - 1; ++s) {
    // reduce-scatter step s sends chunk (rank − s); all-gather step s sends chunk (rank + 1 − s)
    const int rs = ((rank - s) % world_size + world_size) % world_size;
    const int ag = ((rank + 1 - s) % world_size + world_size) % world_size;
    for (int c : {rs, ag}) {
      const auto [b, e] = ring_chunk(n, world_size, c);
      bytes += encoded_size(wire, e - b);
    }
  }
  return bytes;
}

}  // namespace pico::comm
