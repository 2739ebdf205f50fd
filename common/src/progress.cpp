#include "pico/common/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <mutex>

#include "pico/common/error.h"
#include "progress_internal.h"

namespace pico {
namespace detail {
namespace {
std::string g_live;  // the live line's text, "" when none; guarded by terminal_mutex()
}

std::mutex& terminal_mutex() {
  static std::mutex m;
  return m;
}

void clear_progress_line_locked() {
  if (!g_live.empty()) std::fputs("\r\033[2K", stderr);
}

void redraw_progress_line_locked() {
  if (!g_live.empty()) {
    std::fputs(g_live.c_str(), stderr);
    std::fflush(stderr);
  }
}
}  // namespace detail

ProgressLine::ProgressLine(std::chrono::duration<double> interval)
    : tty_(isatty(STDERR_FILENO) == 1), interval_(interval) {}

ProgressLine::~ProgressLine() {
  if (!tty_) return;
  std::lock_guard<std::mutex> lock(detail::terminal_mutex());
  detail::clear_progress_line_locked();
  detail::g_live.clear();
  std::fflush(stderr);
}

void ProgressLine::update(const std::string& text, bool force) {
  const auto now = std::chrono::steady_clock::now();
  const auto min_gap = tty_ ? std::chrono::duration<double>(0.1) : interval_;
  if (!force && printed_ && now - last_ < min_gap) return;
  last_ = now;
  printed_ = true;
  std::lock_guard<std::mutex> lock(detail::terminal_mutex());
  if (tty_) {
    detail::clear_progress_line_locked();
    detail::g_live = text;
    detail::redraw_progress_line_locked();
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
    std::fflush(stderr);
  }
}

void ProgressLine::finish(const std::string& text) {
  std::lock_guard<std::mutex> lock(detail::terminal_mutex());
  detail::clear_progress_line_locked();
  detail::g_live.clear();
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  char buf[32];
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", seconds);
  } else if (seconds < 3600) {
    const int s = static_cast<int>(seconds);
    std::snprintf(buf, sizeof buf, "%dm%02ds", s / 60, s % 60);
  } else {
    const int m = static_cast<int>(seconds / 60);
    std::snprintf(buf, sizeof buf, "%dh%02dm", m / 60, m % 60);
  }
  return buf;
}

std::string format_bytes(double bytes) {
  static const char* kUnits[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, kUnits[u]);
  return buf;
}

}  // namespace pico
