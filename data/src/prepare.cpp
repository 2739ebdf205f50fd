#include "pico/data/prepare.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/common/log.h"
#include "pico/common/progress.h"
#include "pico/data/tokenizer.h"

namespace pico::data {
namespace {

struct Block {
  std::size_t first_line = 0, end_line = 0;  // [first, end) in the global line list
  bool val = false;
  bool ends_file = false;  // append EOS after this block
};

void validate(const PrepareOptions& o) {
  if (o.inputs.empty()) throw Error("no input files", "pass one or more --input FILE");
  if (o.output_dir.empty()) throw Error("no output directory", "pass --output DIR");
  if (o.num_shards < 1) throw Error(str("--shards ", o.num_shards, " must be at least 1"));
  if (!(o.val_fraction >= 0 && o.val_fraction < 0.5))
    throw Error(str("--val-fraction ", o.val_fraction, " is out of range"), "use a value in [0, 0.5), e.g. 0.05");
  if (o.lines_per_block < 1) throw Error(str("lines per block ", o.lines_per_block, " must be at least 1"));
  if (!o.tokenizer.empty() && !std::filesystem::exists(o.tokenizer))
    throw Error(str("tokenizer ", o.tokenizer, " does not exist"),
                "pass an existing sentencepiece .model, or omit --tokenizer to train one");
}

// The files a dataset directory holds that prepare_dataset writes: manifest.json first (a
// directory without it is not a dataset), then the tokenizer and the shards.
std::vector<std::filesystem::path> dataset_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<fs::path> out;
  std::error_code ec;
  if (fs::exists(fs::path(dir) / "manifest.json", ec)) out.push_back(fs::path(dir) / "manifest.json");
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const bool shard = (name.rfind("train_", 0) == 0 || name.rfind("val_", 0) == 0) && it->path().extension() == ".bin";
    if (shard || name == "tokenizer.model" || name == "tokenizer.vocab") out.push_back(it->path());
  }
  return out;
}

// Refuses to replace a dataset unless told to; with `overwrite`, removes pico's files of it
// (keeping a tokenizer that --tokenizer names, which is about to be reused).
void clear_output(const PrepareOptions& o) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(o.output_dir, ec)) return;
  if (!fs::is_directory(o.output_dir, ec))
    throw Error(str("--output ", o.output_dir, " is a file, not a directory"), "choose a directory for the dataset");
  auto files = dataset_files(o.output_dir);
  if (files.empty()) return;
  if (!o.overwrite)
    throw Error(str("dataset directory ", o.output_dir, " already holds a dataset (", files.front().filename().string(),
                    files.size() > 1 ? str(" and ", files.size() - 1, " more files") : std::string(), ")"),
                "pass --overwrite to replace it, or choose another --output");
  const fs::path keep = o.tokenizer.empty() ? fs::path() : fs::absolute(o.tokenizer);
  std::size_t removed = 0;
  for (const auto& f : files) {  // manifest.json first: a half-removed directory is no dataset
    if (!keep.empty() && fs::absolute(f) == keep) continue;
    fs::remove(f, ec);
    if (ec) throw Error(str("--overwrite: cannot remove ", f.string(), ": ", ec.message()), "check the permissions");
    ++removed;
  }
  log_info("--overwrite: removed the previous dataset's ", removed, " files in ", o.output_dir);
}

}  // namespace

Manifest prepare_dataset(const PrepareOptions& o) {
  validate(o);
  for (const auto& path : o.inputs)  // before anything is removed or written
    if (!std::filesystem::exists(path))
      throw Error(str("input file ", path, " does not exist"), "check the path given to --input");
  clear_output(o);
  const auto t0 = std::chrono::steady_clock::now();

  // 1. Read every input as lines; a file becomes consecutive blocks of lines.
  std::vector<std::string> lines;
  std::vector<Block> blocks;
  std::uint64_t bytes = 0;
  for (const auto& path : o.inputs) {
    if (!std::filesystem::exists(path))
      throw Error(str("input file ", path, " does not exist"), "check the path given to --input");
    if (std::filesystem::is_directory(path))
      throw Error(str("input ", path, " is a directory"), "pass text files, e.g. --input dir/*.txt");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(str("cannot read input file ", path), "check its permissions");
    const std::size_t file_first = lines.size();
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      bytes += line.size() + 1;
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      lines.push_back(std::move(line));
    }
    if (lines.size() == file_first)
      throw Error(str("input file ", path, " is empty (no non-blank lines)"), "pass a UTF-8 text file with content");
    for (std::size_t b = file_first; b < lines.size(); b += static_cast<std::size_t>(o.lines_per_block))
      blocks.push_back({b, std::min(lines.size(), b + static_cast<std::size_t>(o.lines_per_block)), false, false});
    blocks.back().ends_file = true;
  }
  log_info("read ", o.inputs.size(), " file(s): ", lines.size(), " lines, ", format_bytes(static_cast<double>(bytes)));

  // 2. Hold out whole blocks for validation, chosen by a hash of (seed, block index).
  std::size_t n_val = 0;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    blocks[b].val = static_cast<double>(mix64(o.seed, b) % 1'000'000) < o.val_fraction * 1e6;
    n_val += blocks[b].val;
  }
  if (o.val_fraction > 0 && n_val == 0 && blocks.size() > 1) {
    blocks.back().val = true;
    n_val = 1;
  }
  if (n_val == blocks.size()) {
    blocks.front().val = false;
    --n_val;
  }
  if (o.val_fraction > 0 && n_val == 0)
    throw Error("the corpus is too small to hold out a validation split",
                "pass more text, or --val-fraction 0 to train without validation");

  // 3. Tokenizer: train on the training lines only, or copy the given model.
  make_dirs(o.output_dir);
  const std::string tok_path = o.output_dir + "/tokenizer.model";
  if (o.tokenizer.empty()) {
    std::vector<std::string> train_lines;
    for (const auto& b : blocks)
      if (!b.val)
        for (std::size_t i = b.first_line; i < b.end_line; ++i) train_lines.push_back(lines[i]);
    TokenizerTrainOptions topt;
    topt.vocab_size = o.vocab_size;
    topt.num_threads = o.threads > 0 ? o.threads : static_cast<std::int32_t>(std::thread::hardware_concurrency());
    train_tokenizer(train_lines, o.output_dir, topt);
  } else if (std::filesystem::absolute(o.tokenizer) != std::filesystem::absolute(tok_path)) {
    write_file_atomic(tok_path, read_file(o.tokenizer));
  }
  const Tokenizer tok = Tokenizer::load(tok_path);
  log_info("tokenizer: ", tok_path, " (", tok.vocab_size(), " pieces)");

  // 4. Encode blocks in parallel.
  std::vector<std::vector<std::int32_t>> encoded(blocks.size());
  std::atomic<std::size_t> next{0}, done{0};
  std::atomic<bool> failed{false};
  const unsigned n_threads =
      o.threads > 0 ? static_cast<unsigned>(o.threads) : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  std::exception_ptr failure;
  std::mutex failure_mu;
  for (unsigned t = 0; t < n_threads; ++t) {
    pool.emplace_back([&] {
      try {
        for (std::size_t b; !failed.load() && (b = next.fetch_add(1)) < blocks.size();) {
          auto& out = encoded[b];
          for (std::size_t i = blocks[b].first_line; i < blocks[b].end_line; ++i) {
            auto ids = tok.encode(lines[i]);
            out.insert(out.end(), ids.begin(), ids.end());
          }
          if (blocks[b].ends_file) out.push_back(tok.eos_id());
          done.fetch_add(1);
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mu);
        failure = std::current_exception();
        failed.store(true);
      }
    });
  }
  {
    ProgressLine progress(std::chrono::seconds(5));
    while (done.load() < blocks.size() && !failed.load()) {
      progress.update(str("encoding: ", done.load(), "/", blocks.size(), " blocks"));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (auto& th : pool) th.join();
  }
  if (failure) std::rethrow_exception(failure);

  // 5. Train blocks round-robin over the shards (so every shard is a sample of the whole
  //    corpus); validation blocks into one shard.
  std::vector<std::vector<std::int32_t>> shard_tokens(static_cast<std::size_t>(o.num_shards));
  std::vector<std::int32_t> val_tokens;
  std::size_t t_index = 0;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    auto& dst = blocks[b].val ? val_tokens : shard_tokens[t_index++ % shard_tokens.size()];
    dst.insert(dst.end(), encoded[b].begin(), encoded[b].end());
    std::vector<std::int32_t>().swap(encoded[b]);
  }

  Manifest m;
  m.tokenizer_sha256 = sha256_file(tok_path);
  m.vocab_size = tok.vocab_size();
  m.val_fraction = o.val_fraction;
  m.seed = o.seed;
  for (const auto& in : o.inputs) m.sources.push_back(std::filesystem::path(in).filename().string());
  auto write = [&](const std::string& name, const std::vector<std::int32_t>& toks) {
    if (toks.empty())
      throw Error(str("shard ", name, " would be empty: the corpus is too small for ", o.num_shards, " shards"),
                  "pass fewer --shards or more text");
    const std::string path = o.output_dir + "/" + name;
    const ShardHeader h = write_shard(path, toks, static_cast<std::uint32_t>(tok.vocab_size()));
    return ShardEntry{name, h.token_count, h.tokens_crc32c, sha256_file(path)};
  };
  for (std::size_t s = 0; s < shard_tokens.size(); ++s) {
    char name[32];
    std::snprintf(name, sizeof name, "train_%05zu.bin", s);
    m.train.push_back(write(name, shard_tokens[s]));
  }
  if (!val_tokens.empty()) m.val.push_back(write("val_00000.bin", val_tokens));
  m.dataset_hash = m.compute_dataset_hash();
  m.save(o.output_dir);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_info("wrote ", o.output_dir, ": ", m.train_tokens(), " train tokens in ", m.train.size(), " shards, ",
           m.val_tokens(), " validation tokens, dataset ", m.dataset_hash.substr(0, 12), " (", format_duration(secs),
           ")");
  return m;
}

}  // namespace pico::data
