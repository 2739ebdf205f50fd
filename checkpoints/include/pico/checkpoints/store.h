// pico/checkpoints/store.h — a run's checkpoint directory: step files, manifest, latest.
//
//   RUN_DIR/checkpoints/step_000250.h5   one file per saved step (checkpoint.h)
//   RUN_DIR/checkpoints/manifest.json    SHA-256, size and step of every kept file (atomic)
//   RUN_DIR/checkpoints/latest           the newest file's name, one line (atomic)
//
// Saving order: file (temporary name, fsync, rename) → manifest → latest → prune (the
// retention policy: every file, or the newest keep_latest_k plus every keep_every_n_steps). A crash between any two
// leaves a directory resume can use: an unlisted but complete step file is still loadable (checked by its Fletcher32s),
// a stale temporary is ignored and later removed.
//
// What this is not: it does not decide what goes into a checkpoint (the trainer does).
#pragma once

#include <cstdint>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "pico/checkpoints/checkpoint.h"

namespace pico::checkpoints {

struct ManifestEntry {
  std::string file;  // "step_000250.h5", relative to the directory
  std::int64_t step = 0;
  std::uint64_t bytes = 0;
  std::string sha256;
  double saved_unix = 0;
  double save_seconds = 0;  // write + fsync + rename + hash
};

class CheckpointDir {
 public:
  // What save() keeps: `keep_latest_k` = 0 keeps every step file (a trajectory for
  // `pico analyze`, as pico-train keeps); k >= 2 keeps the newest k and, when
  // `keep_every_n_steps` > 0, also every older one whose step is a multiple of it (a coarse
  // trajectory at bounded disk use); the rest are deleted after each save. k = 1 is refused:
  // a crash while saving must leave a valid checkpoint behind.
  explicit CheckpointDir(std::string dir, std::int64_t keep_latest_k = 0, std::int64_t keep_every_n_steps = 0);

  static std::string file_name(std::int64_t step);                         // "step_000250.h5"
  static std::optional<std::int64_t> parse_step(const std::string& name);  // "step_000250.h5" → 250

  const std::string& dir() const { return dir_; }
  std::string path_of(const std::string& file) const { return dir_ + "/" + file; }
  std::string manifest_path() const { return dir_ + "/manifest.json"; }
  std::string latest_path() const { return dir_ + "/latest"; }

  // Step files present in the directory, newest step first (temporaries excluded).
  std::vector<std::pair<std::int64_t, std::string>> list() const;
  // The manifest's entries (empty when there is none). An unreadable manifest is logged
  // and treated as empty: the step files themselves stay verifiable by their Fletcher32s.
  std::vector<ManifestEntry> manifest() const;
  std::optional<ManifestEntry> manifest_entry(const std::string& file) const;
  // The file named by `latest`, if any.
  std::optional<std::string> latest() const;

  // Writes `data` as step_NNNNNN.h5 (blocking), records it in the manifest, moves
  // `latest`, prunes. Throws pico::Error on a failed write (the previous files stay).
  ManifestEntry save(std::int64_t step, const CheckpointData& data, const WriteOptions& options = {});

  // Renames a file that failed to load to NAME.invalid (kept for inspection, never loaded
  // again) and drops it from the manifest and `latest`.
  void quarantine(const std::string& file, const std::string& reason);
  // Removes ".step_*.h5.tmp.PID" files left by a process that died mid-save.
  void remove_stale_temporaries();

 private:
  void write_manifest(const std::vector<ManifestEntry>& entries) const;
  void prune(std::int64_t saved_step, std::vector<ManifestEntry>& entries);
  std::string dir_;
  std::int64_t keep_;        // 0 = all
  std::int64_t keep_every_;  // 0 = none beyond the newest keep_
};

// A checkpoint named on a command line: a step_*.h5 file itself, or a checkpoints directory
// or run directory (its `latest`, else its newest step file; for a run of several
// contributors, contributor 0's). Throws pico::Error naming
// the path, with a HINT, when there is none.
std::string resolve_checkpoint(const std::string& path);

// Runs saves on a background thread, one at a time, so that training continues while a
// checkpoint is written. submit() first waits for the previous save (and rethrows its
// error), then returns at once. Not thread-safe: one owner thread calls submit/wait.
class AsyncSaver {
 public:
  explicit AsyncSaver(CheckpointDir& dir) : dir_(dir) {}
  ~AsyncSaver();  // waits for a pending save; logs (does not throw) its error
  AsyncSaver(const AsyncSaver&) = delete;
  AsyncSaver& operator=(const AsyncSaver&) = delete;

  void submit(std::int64_t step, CheckpointData data, const WriteOptions& options = {});
  // Blocks until no save is pending; returns the last completed save (if any).
  std::optional<ManifestEntry> wait();
  bool pending() const { return pending_.valid(); }
  double waited_seconds() const { return waited_seconds_; }  // time submit/wait blocked on a save

 private:
  CheckpointDir& dir_;
  std::future<ManifestEntry> pending_;
  std::optional<ManifestEntry> last_;
  double waited_seconds_ = 0;
};

}  // namespace pico::checkpoints
