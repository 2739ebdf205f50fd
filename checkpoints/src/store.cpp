// A run's checkpoint directory: step files, manifest.json, latest, pruning, background saves.
#include "pico/checkpoints/store.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "pico/common/fs.h"
#include "pico/common/log.h"
#include "pico/common/strings.h"

namespace pico::checkpoints {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kManifestFormat = "pico-checkpoint-manifest";
constexpr int kManifestVersion = 1;

}  // namespace

CheckpointDir::CheckpointDir(std::string dir, std::int64_t keep_latest_k, std::int64_t keep_every_n_steps)
    : dir_(std::move(dir)), keep_(keep_latest_k), keep_every_(keep_every_n_steps) {
  if (keep_ < 0 || keep_ == 1)
    throw Error(str("checkpointing.keep_latest_k = ", keep_, " for ", dir_),
                "keep at least 2 checkpoints, so that a crash while saving leaves a valid one (0 keeps every one)");
  if (keep_every_ < 0)
    throw Error(str("checkpointing.keep_every_n_steps = ", keep_every_, " for ", dir_), "use 0 (none) or a step count");
}

std::string CheckpointDir::file_name(std::int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%06lld.h5", static_cast<long long>(step));
  return buf;
}

std::optional<std::int64_t> CheckpointDir::parse_step(const std::string& name) {
  if (!starts_with(name, "step_") || !ends_with(name, ".h5") || name.size() <= 8) return std::nullopt;
  const std::string digits = name.substr(5, name.size() - 8);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 15)
    return std::nullopt;
  return std::stoll(digits);
}

std::vector<std::pair<std::int64_t, std::string>> CheckpointDir::list() const {
  std::vector<std::pair<std::int64_t, std::string>> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (auto step = parse_step(name); step && it->is_regular_file()) out.emplace_back(*step, name);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

std::vector<ManifestEntry> CheckpointDir::manifest() const {
  std::vector<ManifestEntry> out;
  if (!fs::exists(manifest_path())) return out;
  try {
    const auto j = nlohmann::json::parse(read_file(manifest_path()));
    if (j.value("format", "") != kManifestFormat)
      throw Error(str("format is '", j.value("format", ""), "', expected '", kManifestFormat, "'"));
    for (const auto& e : j.at("checkpoints")) {
      ManifestEntry m;
      m.file = e.at("file").get<std::string>();
      m.step = e.at("step").get<std::int64_t>();
      m.bytes = e.at("bytes").get<std::uint64_t>();
      m.sha256 = e.at("sha256").get<std::string>();
      m.saved_unix = e.value("saved_unix", 0.0);
      m.save_seconds = e.value("save_seconds", 0.0);
      out.push_back(m);
    }
  } catch (const std::exception& e) {
    log_warn("ignoring unreadable checkpoint manifest ", manifest_path(), ": ", e.what(),
             " (the step files are still verified by their Fletcher32 checksums; the next save rewrites it)");
    out.clear();
  }
  return out;
}

std::optional<ManifestEntry> CheckpointDir::manifest_entry(const std::string& file) const {
  for (const auto& e : manifest())
    if (e.file == file) return e;
  return std::nullopt;
}

std::optional<std::string> CheckpointDir::latest() const {
  if (!fs::exists(latest_path())) return std::nullopt;
  try {
    std::string s = trim(read_file(latest_path()));
    if (s.empty()) return std::nullopt;
    return s;
  } catch (const Error&) {
    return std::nullopt;
  }
}

void CheckpointDir::write_manifest(const std::vector<ManifestEntry>& entries) const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& e : entries)
    list.push_back({{"file", e.file},
                    {"step", e.step},
                    {"bytes", e.bytes},
                    {"sha256", e.sha256},
                    {"saved_unix", e.saved_unix},
                    {"save_seconds", e.save_seconds}});
  nlohmann::json j = {{"format", kManifestFormat},
                      {"version", kManifestVersion},
                      {"checkpoint_format_version", kFormatVersion},
                      {"latest", entries.empty() ? "" : entries.back().file},
                      {"checkpoints", list}};
  write_file_atomic(manifest_path(), j.dump(2) + "\n");
}

void CheckpointDir::prune(std::int64_t saved_step, std::vector<ManifestEntry>& entries) {
  // Only files at or before the step just saved are ours to prune: a newer file can only be
  // one that failed to load (and was kept for inspection) or one of another trajectory.
  if (keep_ == 0) return;  // a whole trajectory
  std::int64_t kept = 0;
  for (const auto& [step, name] : list()) {
    if (step > saved_step) continue;
    if (++kept <= keep_) continue;
    if (keep_every_ > 0 && step % keep_every_ == 0) continue;
    std::error_code ec;
    fs::remove(path_of(name), ec);
    if (ec)
      log_warn("cannot delete old checkpoint ", path_of(name), ": ", ec.message());
    else
      log_debug("deleted old checkpoint ", path_of(name));
    entries.erase(
        std::remove_if(entries.begin(), entries.end(), [&](const ManifestEntry& e) { return e.file == name; }),
        entries.end());
  }
}

ManifestEntry CheckpointDir::save(std::int64_t step, const CheckpointData& data, const WriteOptions& options) {
  make_dirs(dir_);
  const auto t0 = Clock::now();
  const std::string file = file_name(step);
  const WriteResult w = write_checkpoint(path_of(file), data, options);
  ManifestEntry m;
  m.file = file;
  m.step = step;
  m.bytes = w.bytes;
  m.sha256 = w.sha256;
  m.saved_unix = static_cast<double>(std::time(nullptr));
  m.save_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  auto entries = manifest();
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [&](const ManifestEntry& e) { return e.file == file || !fs::exists(path_of(e.file)); }),
                entries.end());
  entries.push_back(m);
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  prune(step, entries);
  // The manifest and `latest` name the file just written, even if a newer (quarantined or
  // foreign) step number exists: it is the state this run continues from.
  auto it = std::find_if(entries.begin(), entries.end(), [&](const ManifestEntry& e) { return e.file == file; });
  if (it != entries.end()) std::rotate(it, it + 1, entries.end());
  write_manifest(entries);
  write_file_atomic(latest_path(), file + "\n");
  log_info("saved ", path_of(file), ": ", w.bytes, " bytes in ", m.save_seconds, " s (write ", w.write_seconds,
           " s, fsync+rename ", w.sync_seconds, " s, sha256 ", w.hash_seconds, " s)");
  return m;
}

void CheckpointDir::quarantine(const std::string& file, const std::string& reason) {
  const std::string from = path_of(file), to = path_of(file + ".invalid");
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) {
    log_warn("cannot rename ", from, " to ", to, ": ", ec.message());
    return;
  }
  log_warn("moved unusable checkpoint ", from, " to ", to, " (", reason, ")");
  auto entries = manifest();
  const auto n = entries.size();
  entries.erase(std::remove_if(entries.begin(), entries.end(), [&](const ManifestEntry& e) { return e.file == file; }),
                entries.end());
  if (entries.size() != n) write_manifest(entries);
  if (latest() == file) {
    if (entries.empty())
      fs::remove(latest_path(), ec);
    else
      write_file_atomic(latest_path(), entries.back().file + "\n");
  }
}

void CheckpointDir::remove_stale_temporaries() {
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto pos = name.find(".h5.tmp.");
    if (!starts_with(name, ".step_") || pos == std::string::npos) continue;
    // A temporary of a live process (this one included) is not stale.
    const std::string pid_str = name.substr(pos + 8);
    const long pid =
        pid_str.find_first_not_of("0123456789") == std::string::npos && !pid_str.empty() ? std::stol(pid_str) : -1;
    if (pid > 0 && (pid == ::getpid() || fs::exists("/proc/" + pid_str))) continue;
    std::error_code rm;
    fs::remove(it->path(), rm);
    if (!rm) log_info("removed the temporary file of an interrupted save: ", it->path().string());
  }
}

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path;
  if (!fs::is_directory(path, ec))
    throw Error(str("checkpoint ", path, " does not exist"),
                "pass a step_*.h5 file, or a run directory such as runs/demo (its newest checkpoint is used)");
  // A run directory, its checkpoints/ folder, or (a run of several contributors) the first
  // contributor's folder.
  for (const std::string& dir :
       {path, path + "/checkpoints", path + "/checkpoints/contributor_0", path + "/contributor_0"}) {
    if (!fs::is_directory(dir, ec)) continue;
    CheckpointDir d(dir);
    if (auto latest = d.latest(); latest && fs::is_regular_file(d.path_of(*latest), ec)) return d.path_of(*latest);
    if (auto files = d.list(); !files.empty()) return d.path_of(files.front().second);
  }
  throw Error(str("no checkpoint (step_*.h5) in ", path, " or ", path, "/checkpoints"),
              "train with checkpointing.save_every_n_steps (a run always saves at its end), or pass a step_*.h5 file");
}

// ---------------------------------------------------------------------------------------

AsyncSaver::~AsyncSaver() {
  try {
    wait();
  } catch (const std::exception& e) {
    log_error("checkpoint save failed: ", e.what());
  }
}

void AsyncSaver::submit(std::int64_t step, CheckpointData data, const WriteOptions& options) {
  wait();
  pending_ = std::async(std::launch::async,
                        [this, step, data = std::move(data), options]() { return dir_.save(step, data, options); });
}

std::optional<ManifestEntry> AsyncSaver::wait() {
  if (pending_.valid()) {
    const auto t0 = Clock::now();
    auto f = std::move(pending_);
    last_ = f.get();  // rethrows the save's error
    waited_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return last_;
}

}  // namespace pico::checkpoints
