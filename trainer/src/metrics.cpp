#include "pico/trainer/metrics.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "pico/common/error.h"
#include "pico/common/fs.h"

namespace pico::trainer {

MetricsWriter::MetricsWriter(const std::string& path, bool truncate) : path_(path) {
  file_ = std::fopen(path.c_str(), truncate ? "w" : "a");
  if (file_ == nullptr)
    throw Error(str("cannot open ", path, " for writing: ", std::strerror(errno)),
                "check permissions of the run directory");
}

MetricsWriter::~MetricsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

MetricsWriter::MetricsWriter(MetricsWriter&& other) noexcept : path_(std::move(other.path_)), file_(other.file_) {
  other.file_ = nullptr;
}

MetricsWriter& MetricsWriter::operator=(MetricsWriter&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) std::fclose(file_);
    path_ = std::move(other.path_);
    file_ = other.file_;
    other.file_ = nullptr;
  }
  return *this;
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (file_ == nullptr) return;
  const std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    throw Error(str("writing ", path_, " failed: ", std::strerror(errno)), "check free disk space");
}

void truncate_metrics_after(const std::string& path, std::int64_t step, std::int64_t round) {
  if (!std::filesystem::exists(path)) return;
  std::ifstream in(path);
  std::ostringstream kept;
  std::string line;
  while (std::getline(in, line)) {
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("step") && j["step"].get<std::int64_t>() > step) continue;
      if (round >= 0 && j.contains("round") && j["round"].get<std::int64_t>() > round) continue;
      kept << line << "\n";
    } catch (const nlohmann::json::exception&) {
      // a torn last line from a crash: drop it
    }
  }
  write_file_atomic(path, kept.str());
}

}  // namespace pico::trainer
