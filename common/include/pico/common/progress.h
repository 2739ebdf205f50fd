// pico/common/progress.h — one live status line for long work (training, data prepare).
//
// On a terminal the line is redrawn in place ("\r"); log lines clear and redraw it. When
// stderr is not a terminal (CI, a log file) it prints a plain line at most every
// `interval` seconds, so logs stay readable.
#pragma once

#include <chrono>
#include <string>

namespace pico {

class ProgressLine {
 public:
  explicit ProgressLine(std::chrono::duration<double> interval = std::chrono::seconds(10));
  ~ProgressLine();  // clears the line
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // Show `text`. On a terminal updates are throttled to ~10 per second; `force` prints now.
  void update(const std::string& text, bool force = false);
  // Print `text` as a permanent line and clear the live one.
  void finish(const std::string& text);

 private:
  bool tty_;
  std::chrono::duration<double> interval_;
  std::chrono::steady_clock::time_point last_;
  bool printed_ = false;
};

// "1h02m", "3m05s", "12.3s"
std::string format_duration(double seconds);
// "1.5 MB", "12 KB" (powers of 1000, as link speeds are quoted)
std::string format_bytes(double bytes);

}  // namespace pico
