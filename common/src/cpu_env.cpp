#include "pico/common/cpu_env.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
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
  const bool os_avx = (xcr0_lo & 0x6) == 0x6;      // XMM and YMM state
  const bool os_avx512 = (xcr0_lo & 0xe6) == 0xe6;  // plus opmask and ZMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = os_avx && (b & bit_AVX2) != 0;
  f.avx512 = os_avx512 && (b & bit_AVX512F) && (b & bit_AVX512DQ) && (b & bit_AVX512BW) && (b & bit_AVX512VL);
#endif
  return f;
}

namespace {

bool keep_environment() {
  const char* keep = std::getenv("PICO_CPU_ENV");
  if (keep != nullptr && std::strcmp(keep, "keep") == 0) return true;
  return std::getenv("PICO_NO_REEXEC") != nullptr;
}

// OpenBLAS core names (OPENBLAS_CORETYPE, case-insensitive in OpenBLAS) whose sgemm
// kernels use at most AVX2.
bool is_pre_avx512_core(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
  for (const char* core : {"haswell", "zen", "sandybridge", "nehalem", "core2", "penryn", "dunnington", "atom",
                           "barcelona", "bobcat", "bulldozer", "piledriver", "steamroller", "excavator", "prescott",
                           "katmai", "coppermine", "northwood", "opteron", "opteron_sse3", "banias", "athlon"})
    if (name == core) return true;
  return false;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> wanted_cpu_environment() {
  std::vector<std::pair<std::string, std::string>> out;
  if (keep_environment()) return out;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) out.emplace_back("OMP_WAIT_POLICY", "passive");
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  if (core != nullptr && is_pre_avx512_core(core) && detect_cpu_features().avx512)
    out.emplace_back("OPENBLAS_CORETYPE", "SkylakeX");
  return out;
}

void ensure_cpu_environment(char** argv) {
  // Guard against a loop if a variable does not stick.
  if (std::getenv("PICO_CPU_ENV_APPLIED") != nullptr) return;
  const auto wanted = wanted_cpu_environment();
  if (wanted.empty()) return;
  for (const auto& [name, value] : wanted) ::setenv(name.c_str(), value.c_str(), 1);
  ::setenv("PICO_CPU_ENV_APPLIED", "1", 1);
  ::execv("/proc/self/exe", argv);
  // exec failed: carry on with the slower defaults
}

}  // namespace pico
