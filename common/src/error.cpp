#include "pico/common/error.h"

#include <cstring>

namespace pico::detail {

void check_failed(const char* file, int line, const char* expr, const std::string& msg) {
  const char* base = std::strrchr(file, '/');
  throw Error(str("check failed at ", base ? base + 1 : file, ":", line, ": ", expr, msg.empty() ? "" : " ", msg));
}

}  // namespace pico::detail
