// pico/comm/ring.h — the normative arithmetic of pico's all-reduce.
//
// n values over W ranks are cut into W chunks, chunk c = [n·c/W, n·(c+1)/W). A ring
// all-reduce (reduce-scatter then all-gather) passes chunk c from rank c to c+1, …, each
// rank adding its own values to what it received, so chunk c is reduced as
//
//   a ← in_c[c];   for k = 1 … W−1:  a ← in_{(c+k) mod W}[c] + decode(encode(a))
//   result[c] ← decode(encode(a))        (the owner, rank (c−1) mod W, re-quantizes)
//
// with encode/decode the wire codec (identity for fp32). The all-gather then forwards the
// owner's encoded bytes unchanged, so every rank ends with the same bits. Quantization
// blocks (uint8) start at multiples of kUInt8Block from the chunk's start, so how a
// transport splits a chunk into segments never changes the result. Every Communicator must
// produce exactly these bits; ring_reduce_reference computes them from all inputs at once.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "pico/common/codec.h"

namespace pico::comm {

// [begin, end) of chunk c.
std::pair<std::size_t, std::size_t> ring_chunk(std::size_t n, int world_size, int c);
// The rank holding the fully reduced chunk c after reduce-scatter.
inline int ring_owner(int chunk, int world_size) {
  return (chunk + world_size - 1) % world_size;
}

// The normative result for elements [begin, end) of chunk `chunk`: inputs[r] is rank r's
// buffer; out[0, end−begin) receives the result. out may alias none of the inputs.
void ring_reduce_reference(WireDtype wire, const std::vector<const float*>& inputs, int chunk, std::size_t begin,
                           std::size_t end, float* out);

// Bytes a rank sends in a ring all-reduce of n values (reduce-scatter + all-gather
// payloads; message headers not included): Σ over the W−1 chunks it forwards in each phase.
std::size_t ring_allreduce_payload_bytes(WireDtype wire, std::size_t n, int world_size, int rank);

}  // namespace pico::comm
