// trainer/src/state_blob.h — named tensors as one byte string (θ_g snapshots for joiners).
//
// Layout: "PSTB" magic (4), version u32 = 1, header length u64, a JSON header
// {"round": r, "tensors": [{"name", "dtype" (float32|int64), "shape", "offset", "bytes"}]},
// then the raw little-endian tensor bytes. The broker verifies the whole blob's SHA-256;
// deserialize_state validates every field and bounds every length before reading.
#pragma once

#include <cstdint>
#include <string>

#include "pico/optim/outer.h"

namespace pico::trainer {

std::string serialize_state(const optim::NamedTensors& state, std::int64_t round);
// Throws pico::Error naming what is malformed.
optim::NamedTensors deserialize_state(const std::string& blob, std::int64_t& round);

}  // namespace pico::trainer
