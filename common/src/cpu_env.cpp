#include "pico/common/cpu_env.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace pico {

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c & bit_OSXSAVE) != 0;
  f.fma = (c & bit_FMA) != 0;
  if (!osxsave) return f;
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool os_avx = (xcr0_lo & 0x6) == 0x6;       // XMM and YMM state
  const bool os_avx512 = (xcr0_lo & 0xe6) == 0xe6;  // plus opmask and ZMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = os_avx && (b & bit_AVX2) != 0;
  f.avx512 = os_avx512 && (b & bit_AVX512F) && (b & bit_AVX512DQ) && (b & bit_AVX512BW) && (b & bit_AVX512VL);
#endif
  return f;
}

namespace {

// PICO_CPU_ENV=keep: change nothing. PICO_NO_REEXEC=1 (older name): no environment
// changes, but malloc is still tuned.
bool keep_environment() {
  const char* keep = std::getenv("PICO_CPU_ENV");
  return keep != nullptr && std::strcmp(keep, "keep") == 0;
}
bool no_reexec() {
  return keep_environment() || std::getenv("PICO_NO_REEXEC") != nullptr;
}

// OpenBLAS core names (OPENBLAS_CORETYPE, case-insensitive in OpenBLAS) whose sgemm
// kernels use at most AVX2.
bool is_pre_avx512_core(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
  for (const char* core :
       {"haswell",    "zen",       "sandybridge", "nehalem",      "core2",       "penryn",    "dunnington", "atom",
        "barcelona",  "bobcat",    "bulldozer",   "piledriver",   "steamroller", "excavator", "prescott",   "katmai",
        "coppermine", "northwood", "opteron",     "opteron_sse3", "banias",      "athlon"})
    if (name == core) return true;
  return false;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> wanted_cpu_environment() {
  std::vector<std::pair<std::string, std::string>> out;
  if (no_reexec()) return out;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) out.emplace_back("OMP_WAIT_POLICY", "passive");
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  if (core != nullptr && is_pre_avx512_core(core) && detect_cpu_features().avx512)
    out.emplace_back("OPENBLAS_CORETYPE", "SkylakeX");
  return out;
}

void ensure_cpu_environment(char** argv) {
  // PICO_CPU_ENV_APPLIED guards against a loop if a variable does not stick.
  if (std::getenv("PICO_CPU_ENV_APPLIED") == nullptr) {
    const auto wanted = wanted_cpu_environment();
    if (!wanted.empty()) {
      for (const auto& [name, value] : wanted) ::setenv(name.c_str(), value.c_str(), 1);
      ::setenv("PICO_CPU_ENV_APPLIED", "1", 1);
      ::execv("/proc/self/exe", argv);
      // exec failed: carry on with the slower defaults
    }
  }
  tune_malloc_for_training();
}

namespace {
std::atomic<bool> g_malloc_tuned{false};
}  // namespace

void tune_malloc_for_training() {
#if defined(__GLIBC__)
  if (keep_environment()) return;
  ::mallopt(M_MMAP_MAX, 0);
  ::mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  ::mallopt(M_TOP_PAD, 64 << 20);
  g_malloc_tuned = true;
#endif
}

bool malloc_tuned_for_training() {
  return g_malloc_tuned;
}

}  // namespace pico
