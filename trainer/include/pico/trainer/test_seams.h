// pico/trainer/test_seams.h — hooks for tests that make a contributor misbehave.
//
// The shipped `pico` binary never sets them: only test executables do (tests/support/
// seams.cpp links the command line with hooks installed from its environment), so a
// misbehaving member in a multi-process test is a real process running real code, and
// nobody can switch one on in a release. Each hook is called on the training thread.
#pragma once

#include <cstdint>

#include "pico/optim/diloco.h"

namespace pico::trainer {

// Called before the first collective of each DiLoCo outer round with the contributor's
// rank in the round and its outer optimizer (θ_g, momentum), which the hook may change.
using RoundTamperHook = void (*)(int rank, std::int64_t round, optim::DiLoCo& outer);
void set_round_tamper_hook(RoundTamperHook hook);

}  // namespace pico::trainer
