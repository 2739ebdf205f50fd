// pico/common/cpu_env.h: which variables pico sets for itself, and the malloc tuning.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "pico/common/cpu_env.h"

namespace pico {
namespace {

// Sets or unsets variables for one test, restoring them afterwards.
class EnvGuard {
 public:
  void set(const std::string& name, const char* value) {
    if (!saved_.count(name)) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    if (value)
      ::setenv(name.c_str(), value, 1);
    else
      ::unsetenv(name.c_str());
  }
  ~EnvGuard() {
    for (const auto& [name, value] : saved_) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

std::map<std::string, std::string> wanted() {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : wanted_cpu_environment()) out[k] = v;
  return out;
}

TEST(CpuEnv, AsksForPassiveOpenMPWaitingUnlessTheUserChoseAPolicy) {
  EnvGuard env;
  env.set("PICO_CPU_ENV", nullptr);
  env.set("PICO_NO_REEXEC", nullptr);
  env.set("OMP_WAIT_POLICY", nullptr);
  EXPECT_EQ(wanted()["OMP_WAIT_POLICY"], "passive");
  env.set("OMP_WAIT_POLICY", "active");
  EXPECT_EQ(wanted().count("OMP_WAIT_POLICY"), 0u);
}

TEST(CpuEnv, RaisesAnOlderOpenBlasCoreOnlyWhereTheCpuHasAvx512) {
  EnvGuard env;
  env.set("PICO_CPU_ENV", nullptr);
  env.set("PICO_NO_REEXEC", nullptr);
  env.set("OPENBLAS_CORETYPE", "Haswell");
  const bool avx512 = detect_cpu_features().avx512;
  EXPECT_EQ(wanted().count("OPENBLAS_CORETYPE"), avx512 ? 1u : 0u);
  if (avx512) {
    EXPECT_EQ(wanted()["OPENBLAS_CORETYPE"], "SkylakeX");
  }
  env.set("OPENBLAS_CORETYPE", "zen");  // OpenBLAS reads the name case-insensitively
  EXPECT_EQ(wanted().count("OPENBLAS_CORETYPE"), avx512 ? 1u : 0u);
  for (const char* kept : {"SkylakeX", "Cooperlake", "SapphireRapids"}) {
    env.set("OPENBLAS_CORETYPE", kept);
    EXPECT_EQ(wanted().count("OPENBLAS_CORETYPE"), 0u) << kept;
  }
  env.set("OPENBLAS_CORETYPE", nullptr);  // unset: OpenBLAS detects the CPU itself
  EXPECT_EQ(wanted().count("OPENBLAS_CORETYPE"), 0u);
}

TEST(CpuEnv, KeepAndNoReexecChangeNothing) {
  EnvGuard env;
  env.set("OMP_WAIT_POLICY", nullptr);
  env.set("OPENBLAS_CORETYPE", "Haswell");
  env.set("PICO_CPU_ENV", "keep");
  EXPECT_TRUE(wanted_cpu_environment().empty());
  env.set("PICO_CPU_ENV", nullptr);
  env.set("PICO_NO_REEXEC", "1");
  EXPECT_TRUE(wanted_cpu_environment().empty());
}

TEST(CpuEnv, FeaturesAreConsistent) {
  const CpuFeatures f = detect_cpu_features();
  if (f.avx512) {
    EXPECT_TRUE(f.avx2);  // every AVX-512 CPU has AVX2
  }
}

#if defined(__GLIBC__) && defined(__GLIBC_MINOR__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
TEST(CpuEnv, TunedMallocServesLargeBlocksFromTheHeap) {
  EnvGuard env;
  env.set("PICO_CPU_ENV", nullptr);
  tune_malloc_for_training();
  EXPECT_TRUE(malloc_tuned_for_training());
  const std::size_t mapped_before = mallinfo2().hblkhd;
  void* p = std::malloc(std::size_t{48} << 20);  // above glibc's largest mmap threshold
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before);  // no new mmap()ed block
  std::free(p);
}
#endif

}  // namespace
}  // namespace pico
