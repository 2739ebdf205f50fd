// pico/common/log.h — leveled, thread-safe logging to stderr.
//
//   log_info("saved ", path, " in ", ms, " ms");
// Level from PICO_LOG_LEVEL (debug|info|warn|error) or set_log_level(). A line written while
// a progress line is live clears it first (see progress.h).
#pragma once

#include <string>
#include <string_view>

#include "pico/common/error.h"

namespace pico {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();
LogLevel parse_log_level(std::string_view name);  // throws pico::Error on an unknown name
// A prefix for every line of this thread, e.g. "[w2] " for local worker 2.
void set_log_thread_tag(std::string tag);
void log_write(LogLevel level, const std::string& message);

template <typename... Args>
void log_debug(const Args&... args) {
  if (log_level() <= LogLevel::kDebug) log_write(LogLevel::kDebug, str(args...));
}
template <typename... Args>
void log_info(const Args&... args) {
  if (log_level() <= LogLevel::kInfo) log_write(LogLevel::kInfo, str(args...));
}
template <typename... Args>
void log_warn(const Args&... args) {
  if (log_level() <= LogLevel::kWarn) log_write(LogLevel::kWarn, str(args...));
}
template <typename... Args>
void log_error(const Args&... args) {
  if (log_level() <= LogLevel::kError) log_write(LogLevel::kError, str(args...));
}

}  // namespace pico
