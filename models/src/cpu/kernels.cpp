// models/src/cpu/kernels.cpp — picks the kernel table for this CPU (cpu/kernels.h).
#include "cpu/kernels.h"

#include <atomic>
#include <cstring>

#include "pico/common/cpu_env.h"

namespace pico::models::cpu {

std::int64_t attention_scratch_floats(const AttentionArgs& a) {
  return 7 * a.Tp * a.hdp + 2 * kAttentionBlock * a.Tp + 2 * kAttentionBlock * a.hdp + kAttentionBlock;
}

namespace {

struct Isas {
  const KernelTable* tables[4] = {nullptr, nullptr, nullptr, nullptr};
  const char* names[4] = {nullptr, nullptr, nullptr, nullptr};
  Isas() {
    int n = 0;
#if defined(__x86_64__)
    const CpuFeatures f = detect_cpu_features();
    if (f.avx512) tables[n++] = &kTableAvx512;
    if (f.avx2 && f.fma) tables[n++] = &kTableAvx2;
#endif
    tables[n++] = &kTableGeneric;
    for (int i = 0; i < n; ++i) names[i] = tables[i]->isa;
  }
};

const Isas& isas() {
  static const Isas instance;
  return instance;
}

std::atomic<const KernelTable*> g_forced{nullptr};

}  // namespace

const KernelTable& kernels() {
  const KernelTable* forced = g_forced.load(std::memory_order_relaxed);
  return forced != nullptr ? *forced : *isas().tables[0];
}

const char* const* available_isas() {
  return isas().names;
}

void set_isa_for_testing(const char* name) {
  const KernelTable* chosen = nullptr;
  if (name != nullptr && name[0] != '\0')
    for (const KernelTable* t : isas().tables)
      if (t != nullptr && std::strcmp(t->isa, name) == 0) chosen = t;
  g_forced.store(chosen, std::memory_order_relaxed);
}

}  // namespace pico::models::cpu
