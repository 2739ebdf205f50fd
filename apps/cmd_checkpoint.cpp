// pico checkpoint inspect — what a checkpoint holds, with every checksum verified.
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "commands.h"
#include "pico/checkpoints/checkpoint.h"
#include "pico/checkpoints/store.h"
#include "pico/common/error.h"
#include "pico/common/hash.h"
#include "pico/common/strings.h"
#include "pico/trainer/config_io.h"

namespace pico::apps {
namespace {

struct InspectArgs {
  std::string path;
  bool no_verify = false;
  bool groups_only = false;
};

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  std::ostringstream os;
  os << std::fixed << std::setprecision(u == 0 ? 0 : 1) << b << " " << units[u];
  return os.str();
}

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::vector<std::string> parts;
  for (auto d : s) parts.push_back(std::to_string(d));
  return "[" + join(parts, ", ") + "]";
}

const checkpoints::AttrValue* find_attr(const checkpoints::FileInfo& info, const std::string& group,
                                        const std::string& name) {
  auto g = info.attrs.find(group);
  if (g == info.attrs.end()) return nullptr;
  auto a = g->second.find(name);
  return a == g->second.end() ? nullptr : &a->second;
}

std::string attr_or(const checkpoints::FileInfo& info, const std::string& group, const std::string& name,
                    const std::string& fallback = "?") {
  const auto* v = find_attr(info, group, name);
  return v ? checkpoints::format_attr(*v) : fallback;
}

// The group a dataset is summarized under: its first two path components (/optim/inner).
std::string summary_group(const std::string& path) {
  const auto parts = split(path, '/');  // "", "optim", "inner", ...
  std::string g;
  for (std::size_t i = 1; i < parts.size() - 1 && i <= 2; ++i) g += "/" + parts[i];
  if (g == "/learning_dynamics" && parts.size() > 3) g += "/" + parts[3];
  return g.empty() ? "/" : g;
}

void run_inspect(const InspectArgs& a) {
  const std::string path = checkpoints::resolve_checkpoint(a.path);
  const auto info = checkpoints::inspect_checkpoint(path, !a.no_verify);
  auto& out = std::cout;
  out << "checkpoint  " << path << "\n";
  std::string created;
  if (const auto* v = find_attr(info, "/", "created_unix"); v != nullptr && std::holds_alternative<double>(*v)) {
    const std::time_t t = static_cast<std::time_t>(std::get<double>(*v));
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
    created = buf;
  }
  out << "file        " << human_bytes(static_cast<double>(info.file_bytes)) << ", format "
      << attr_or(info, "/", "format") << " v" << info.format_version << ", written by pico "
      << attr_or(info, "/", "pico_version") << (created.empty() ? "" : " at " + created) << "\n";
  out << "state       step " << attr_or(info, "/train_state", "step") << ", round "
      << attr_or(info, "/train_state", "round") << ", tokens " << attr_or(info, "/train_state", "tokens")
      << ", data cursor " << attr_or(info, "/train_state", "data_cursor") << " (sample index), optimizer step "
      << attr_or(info, "/optim/inner", "step") << "\n";
  if (const std::string run_id = attr_or(info, "/train_state", "run_id", ""); !run_id.empty())
    out << "member of   networked run " << run_id << " (contributor "
        << attr_or(info, "/train_state", "contributor_index") << ", a round boundary: /model = θ_g)\n";

  const auto* yaml = find_attr(info, "/config", "yaml");
  if (yaml != nullptr && std::holds_alternative<std::string>(*yaml)) {
    try {
      const auto cfg = trainer::parse_run_config(std::get<std::string>(*yaml), "checkpoint " + path);
      const auto& m = cfg.model;
      const auto& o = cfg.training.optimization;
      out << "model       " << m.n_layers << " layers, d_model " << m.d_model << ", heads " << m.attention_n_heads
          << " (kv " << m.attention_n_kv_heads << "), hidden " << m.activation_hidden_dim << ", vocab " << m.vocab_size
          << ", max_seq_len " << m.max_seq_len << " — " << std::setprecision(3)
          << static_cast<double>(m.num_params()) / 1e6 << "M parameters\n";
      out << "training    run " << cfg.checkpointing.run_name << ", max_steps " << cfg.training.max_steps << ", lr "
          << o.lr << " (" << o.lr_scheduler << ", warmup " << o.lr_warmup_steps << "), batch " << cfg.data.batch_size
          << " × " << m.max_seq_len << " tokens, seed " << cfg.seed << "\n";
      out << "data        " << cfg.data.path << " (dataset "
          << attr_or(info, "/train_state", "dataset_hash").substr(0, 16) << "…)\n";
    } catch (const Error& e) {
      out << "config      (does not parse with this pico: " << e.what() << ")\n";
    }
  } else {
    out << "config      MISSING (/config@yaml)\n";
  }
  std::uint64_t tok_bytes = 0;
  for (const auto& d : info.datasets)
    if (d.path == "/tokenizer/model") tok_bytes = d.bytes;
  out << "tokenizer   " << (tok_bytes ? "embedded, " + human_bytes(static_cast<double>(tok_bytes)) : "MISSING")
      << ", vocab " << attr_or(info, "/tokenizer", "vocab_size") << ", sha256 "
      << attr_or(info, "/tokenizer", "sha256").substr(0, 16) << "…\n";
  out << "learning    suffixes " << attr_or(info, "/learning_dynamics", "layer_suffixes", "-") << ", "
      << attr_or(info, "/learning_dynamics/train", "num_samples", "0") << " train / "
      << attr_or(info, "/learning_dynamics/val", "num_samples", "0") << " val sequences\n";

  // Per-group totals, in file order.
  std::vector<std::string> order;
  std::map<std::string, std::pair<std::size_t, std::uint64_t>> totals;
  for (const auto& g : info.groups) {
    const std::string s = summary_group(g + "/x");
    if (!totals.count(s)) {
      order.push_back(s);
      totals[s] = {0, 0};
    }
  }
  for (const auto& d : info.datasets) {
    const std::string s = summary_group(d.path);
    if (!totals.count(s)) {
      order.push_back(s);
      totals[s] = {0, 0};
    }
    totals[s].first++;
    totals[s].second += d.bytes;
  }
  out << "\ngroups\n";
  for (const auto& g : order)
    out << "  " << std::left << std::setw(30) << g << std::right << std::setw(6) << totals[g].first << " tensors  "
        << std::setw(10) << human_bytes(static_cast<double>(totals[g].second)) << "\n";

  if (!a.groups_only) {
    out << "\ntensors\n";
    for (const auto& d : info.datasets) {
      out << "  " << std::left << std::setw(62) << d.path << std::setw(9) << d.dtype << std::setw(16)
          << shape_str(d.shape) << std::right << std::setw(10) << human_bytes(static_cast<double>(d.bytes));
      if (!a.no_verify) out << "  " << (d.verified ? "ok" : "FAILED: " + d.error);
      out << "\n";
    }
  }

  std::size_t chunked = 0, with_f32 = 0, failed = 0;
  for (const auto& d : info.datasets) {
    chunked += d.chunked;
    with_f32 += d.fletcher32;
    failed += !a.no_verify && !d.verified;
  }
  out << "\nchecksums   ";
  if (a.no_verify)
    out << "not verified (--no-verify); ";
  else
    out << "Fletcher32 on " << with_f32 << "/" << chunked << " chunked datasets; " << info.datasets.size() - failed
        << "/" << info.datasets.size() << " datasets read back intact; ";
  // The run's manifest, next to the file.
  const std::filesystem::path p(path);
  checkpoints::CheckpointDir dir(p.has_parent_path() ? p.parent_path().string() : ".");
  const auto entry = dir.manifest_entry(p.filename().string());
  bool sha_ok = true;
  if (!entry) {
    out << "not listed in " << dir.manifest_path() << " (SHA-256 " << sha256_file(path).substr(0, 16) << "…)\n";
  } else {
    const std::string sha = sha256_file(path);
    sha_ok = sha == entry->sha256;
    out << "SHA-256 " << (sha_ok ? "matches " : "DIFFERS from ") << dir.manifest_path() << " (" << sha.substr(0, 16)
        << "…" << (sha_ok ? "" : ", manifest has " + entry->sha256.substr(0, 16) + "…") << ")\n";
  }
  if (failed > 0 || !sha_ok)
    throw Error(str("checkpoint ", path, " failed verification: ", failed, " dataset(s) unreadable",
                    sha_ok ? "" : ", SHA-256 differs from the manifest"),
                "the file is damaged; use an older checkpoint of the run (resume falls back automatically)");
}

void register_checkpoint(CLI::App& app) {
  auto* cmd = app.add_subcommand("checkpoint", "Work with checkpoint files (HDF5, docs/CHECKPOINT_FORMAT.md).");
  cmd->require_subcommand(1);
  auto args = std::make_shared<InspectArgs>();
  auto* sub = cmd->add_subcommand("inspect", "Show a checkpoint's content and verify its checksums.");
  sub->footer(
      "Prints the step, a config summary, per-group totals and every tensor (dtype, shape, size), then\n"
      "verifies the file: every dataset is read back so that HDF5 checks each chunk's Fletcher32, and the\n"
      "file's SHA-256 is compared with the run's checkpoints/manifest.json. Exit status 1 when any check fails.");
  sub->add_option("path", args->path, "A step_*.h5 file, or a run or checkpoints directory (its newest checkpoint)")
      ->required();
  sub->add_flag("--no-verify", args->no_verify, "List only; do not read the data back to verify checksums");
  sub->add_flag("--groups-only", args->groups_only, "Print group totals, not every tensor");
  sub->callback([args] { run_inspect(*args); });
}

}  // namespace

PICO_COMMAND(30, register_checkpoint);

}  // namespace pico::apps
