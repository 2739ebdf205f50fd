#include "pico/common/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

#include "progress_internal.h"

namespace pico {
namespace {

LogLevel initial_level() {
  const char* env = std::getenv("PICO_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kInfo;
  try {
    return parse_log_level(env);
  } catch (const Error&) {
    return LogLevel::kInfo;
  }
}

std::atomic<LogLevel>& level_ref() {
  static std::atomic<LogLevel> level{initial_level()};
  return level;
}

thread_local std::string t_tag;

}  // namespace

void set_log_level(LogLevel level) {
  level_ref().store(level);
}
LogLevel log_level() {
  return level_ref().load(std::memory_order_relaxed);
}
void set_log_thread_tag(std::string tag) {
  t_tag = std::move(tag);
}

LogLevel parse_log_level(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn" || name == "warning") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  if (name == "off") return LogLevel::kOff;
  throw Error(str("unknown log level '", name, "'"), "use one of debug, info, warn, error, off");
}

void log_write(LogLevel level, const std::string& message) {
  static const char* kNames[] = {"debug", "info", "WARN", "ERROR", ""};
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(detail::terminal_mutex());
  detail::clear_progress_line_locked();
  std::fprintf(stderr, "%s %-5s %s%s\n", stamp, kNames[static_cast<int>(level)], t_tag.c_str(), message.c_str());
  std::fflush(stderr);
  detail::redraw_progress_line_locked();
}

}  // namespace pico
