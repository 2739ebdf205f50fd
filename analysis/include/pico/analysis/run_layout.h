// pico/analysis/run_layout.h — which checkpoint files a run has, per contributor and step.
//
//   RUN_DIR/checkpoints/step_NNNNNN.h5                     a single-contributor run
//   RUN_DIR/checkpoints/contributor_<w>/step_NNNNNN.h5     a run with N local contributors, w = 0..N−1
//
// RUN_DIR may also be the checkpoints directory itself, or a run whose
// checkpointing.checkpoints_dir is not "checkpoints" (the one sub-directory holding step
// files is used).
//
// What this is not: it opens no checkpoint (runner.h reads them).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pico::analysis {

struct ContributorFiles {
  std::int64_t index = 0;                     // w; 0 for a single-contributor run
  std::string dir;                            // the directory holding its step files
  std::map<std::int64_t, std::string> files;  // step → path, ascending
};

struct RunLayout {
  std::string run_path;         // as given
  std::string checkpoints_dir;  // RUN_DIR/checkpoints (or what was found)
  bool multi_contributor = false;
  std::vector<ContributorFiles> contributors;  // by index

  const ContributorFiles* contributor(std::int64_t w) const;
  std::vector<std::int64_t> steps_of(std::int64_t w) const;  // ascending
  std::string describe() const;                              // "3 contributors, 20 steps each (0..950)" for logs
};

// Throws pico::Error naming the path, with a HINT, when it does not exist or holds no
// checkpoints.
RunLayout discover_run(const std::string& run_path);

// "0, 50, 100, … 950" (at most `max_items` shown).
std::string steps_text(const std::vector<std::int64_t>& steps, std::size_t max_items = 12);

}  // namespace pico::analysis
