// Finding a run's checkpoint files (see run_layout.h).
#include "pico/analysis/run_layout.h"

#include <algorithm>
#include <filesystem>

#include "pico/checkpoints/store.h"
#include "pico/common/error.h"
#include "pico/common/strings.h"

namespace pico::analysis {
namespace {

namespace fs = std::filesystem;

std::map<std::int64_t, std::string> step_files(const std::string& dir) {
  std::map<std::int64_t, std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string name = it->path().filename().string();
    if (auto step = checkpoints::CheckpointDir::parse_step(name)) out[*step] = it->path().string();
  }
  return out;
}

// contributor_<w> sub-directories that hold step files.
std::vector<ContributorFiles> contributor_dirs(const std::string& dir) {
  std::vector<ContributorFiles> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    const std::string name = it->path().filename().string();
    if (!starts_with(name, "contributor_")) continue;
    const std::string num = name.substr(12);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
    ContributorFiles c;
    c.index = std::stoll(num);
    c.dir = it->path().string();
    c.files = step_files(c.dir);
    if (!c.files.empty()) out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.index < b.index; });
  return out;
}

bool fill(RunLayout& layout, const std::string& dir) {
  auto flat = step_files(dir);
  auto contributors = contributor_dirs(dir);
  if (flat.empty() && contributors.empty()) return false;
  layout.checkpoints_dir = dir;
  if (!contributors.empty()) {
    layout.multi_contributor = true;
    layout.contributors = std::move(contributors);
  } else {
    layout.contributors.push_back({0, dir, std::move(flat)});
  }
  return true;
}

}  // namespace

const ContributorFiles* RunLayout::contributor(std::int64_t w) const {
  for (const auto& c : contributors)
    if (c.index == w) return &c;
  return nullptr;
}

std::vector<std::int64_t> RunLayout::steps_of(std::int64_t w) const {
  std::vector<std::int64_t> out;
  if (const auto* c = contributor(w))
    for (const auto& [s, p] : c->files) out.push_back(s);
  return out;
}

std::string RunLayout::describe() const {
  if (!multi_contributor) {
    const auto steps = steps_of(contributors.front().index);
    return str(steps.size(), " checkpoint(s) in ", checkpoints_dir, " (steps ", steps_text(steps), ")");
  }
  std::vector<std::string> parts;
  for (const auto& c : contributors) parts.push_back(str("contributor_", c.index, ": ", c.files.size()));
  return str(contributors.size(), " contributors in ", checkpoints_dir, " (", join(parts, ", "), " checkpoints)");
}

RunLayout discover_run(const std::string& run_path) {
  std::error_code ec;
  RunLayout layout;
  layout.run_path = run_path;
  if (!fs::exists(run_path, ec))
    throw Error(str("run directory ", run_path, " does not exist"),
                "pass the run directory (checkpointing.runs_dir/run_name, e.g. runs/demo)");
  if (!fs::is_directory(run_path, ec))
    throw Error(str(run_path, " is not a directory"),
                "pass the run directory (e.g. runs/demo), not a single checkpoint file");
  if (fill(layout, run_path + "/checkpoints") || fill(layout, run_path)) return layout;
  // A run with another checkpointing.checkpoints_dir: the one sub-directory with checkpoints.
  std::vector<std::string> found;
  for (fs::directory_iterator it(run_path, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) {
      RunLayout probe;
      if (fill(probe, it->path().string())) found.push_back(it->path().string());
    }
  if (found.size() == 1 && fill(layout, found.front())) return layout;
  if (found.size() > 1)
    throw Error(str("run directory ", run_path, " has checkpoints in several sub-directories: ", join(found, ", ")),
                "pass the checkpoints directory you mean");
  throw Error(str("no checkpoints in ", run_path, " (looked for ", run_path, "/checkpoints/step_*.h5 and ", run_path,
                  "/checkpoints/contributor_<w>/step_*.h5)"),
              "pico train saves every checkpointing.save_every_n_steps steps and at the end of the run; pass the run "
              "directory (e.g. runs/demo)");
}

std::string steps_text(const std::vector<std::int64_t>& steps, std::size_t max_items) {
  if (steps.empty()) return "none";
  std::vector<std::string> parts;
  if (steps.size() <= max_items) {
    for (auto s : steps) parts.push_back(std::to_string(s));
  } else {
    for (std::size_t i = 0; i + 1 < max_items; ++i) parts.push_back(std::to_string(steps[i]));
    parts.push_back(str("… ", steps.back()));
  }
  return join(parts, ", ");
}

}  // namespace pico::analysis
