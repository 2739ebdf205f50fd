// pico/trainer/metrics.h — RUN_DIR/metrics.jsonl: one JSON object per line, flushed per line.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace pico::trainer {

class MetricsWriter {
 public:
  MetricsWriter() = default;
  // Opens `path` for appending (truncate = start a new file). Throws pico::Error.
  MetricsWriter(const std::string& path, bool truncate);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  MetricsWriter(MetricsWriter&& other) noexcept;
  MetricsWriter& operator=(MetricsWriter&& other) noexcept;

  // Writes one line and flushes it to the kernel, so a crash loses at most the line being written.
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// Rewrites `path` keeping only records whose "step" is <= `step` and, when round >= 0, whose
// "round" is <= `round` (used on resume, so the file never holds steps or outer rounds that
// the resumed run will redo). Lines that do not parse are dropped.
void truncate_metrics_after(const std::string& path, std::int64_t step, std::int64_t round = -1);

}  // namespace pico::trainer
