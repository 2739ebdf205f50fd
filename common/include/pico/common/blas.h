// pico/common/blas.h — which BLAS does this process's sgemm come from?
//
// Debian's LibTorch calls sgemm through libblas.so.3, which the alternatives system may
// point at the reference BLAS: training then runs ~20x slower. pico checks at start-up
// and warns loudly.
#pragma once

#include <string>

namespace pico {

struct BlasInfo {
  std::string library;  // path of the shared object that provides sgemm_, "" if none
  std::string name;     // "OpenBLAS", "MKL", "BLIS", "reference", "unknown"
  std::string detail;   // e.g. OpenBLAS's core name and thread count
  bool optimized = false;
};

BlasInfo detect_blas();
// Logs one line at debug level when the BLAS is optimized; a loud multi-line warning with
// the fix when it is not.
void warn_if_slow_blas();

}  // namespace pico
