#include "pico/common/blas.h"

#include <dlfcn.h>

#include <climits>
#include <cstdlib>

#include "pico/common/log.h"

namespace pico {

BlasInfo detect_blas() {
  BlasInfo info;
  void* sgemm = ::dlsym(RTLD_DEFAULT, "sgemm_");
  if (sgemm == nullptr) {
    info.name = "unknown";
    info.detail = "no sgemm_ symbol in the process";
    return info;
  }
  Dl_info dl{};
  if (::dladdr(sgemm, &dl) != 0 && dl.dli_fname != nullptr) {
    // dladdr names the object as loaded (/lib/x86_64-linux-gnu/libblas.so.3); the
    // alternatives system makes that a symlink, so resolve it to see which BLAS it is.
    char resolved[PATH_MAX];
    info.library = ::realpath(dl.dli_fname, resolved) != nullptr ? resolved : dl.dli_fname;
  }

  using CharFn = char* (*)();
  using IntFn = int (*)();
  if (auto corename = reinterpret_cast<CharFn>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"))) {
    // The symbol may come from libopenblas.so.0 linked beside a reference libblas.so.3:
    // only trust it if sgemm_ itself lives in an OpenBLAS object.
    if (info.library.find("openblas") != std::string::npos) {
      info.name = "OpenBLAS";
      info.optimized = true;
      info.detail = std::string("core ") + corename();
      if (auto nt = reinterpret_cast<IntFn>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads")))
        info.detail += ", " + std::to_string(nt()) + " threads";
      return info;
    }
  }
  if (info.library.find("mkl") != std::string::npos) {
    info.name = "MKL";
    info.optimized = true;
  } else if (info.library.find("blis") != std::string::npos) {
    info.name = "BLIS";
    info.optimized = true;
  } else if (info.library.find("openblas") != std::string::npos) {
    info.name = "OpenBLAS";
    info.optimized = true;
  } else if (info.library.find("/blas/") != std::string::npos || info.library.find("libblas") != std::string::npos) {
    info.name = "reference";
  } else {
    info.name = "unknown";
  }
  return info;
}

void warn_if_slow_blas() {
  const BlasInfo info = detect_blas();
  if (info.optimized) {
    log_debug("BLAS: ", info.name, " (", info.detail, ") from ", info.library);
    return;
  }
  log_warn("*****************************************************************************");
  log_warn("LibTorch is using the ", info.name, " BLAS (", info.library.empty() ? "?" : info.library,
           "): training will be ~20x slower than with OpenBLAS.");
  log_warn(
      "HINT: sudo apt-get install libopenblas0-pthread && sudo update-alternatives --set "
      "libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3");
  log_warn("      (scripts/setup does both)");
  log_warn("*****************************************************************************");
}

}  // namespace pico
