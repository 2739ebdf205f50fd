#include "pico/data/manifest.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"

namespace pico::data {

using nlohmann::json;

std::uint64_t Manifest::train_tokens() const {
  std::uint64_t n = 0;
  for (const auto& s : train) n += s.tokens;
  return n;
}

std::uint64_t Manifest::val_tokens() const {
  std::uint64_t n = 0;
  for (const auto& s : val) n += s.tokens;
  return n;
}

std::string Manifest::compute_dataset_hash() const {
  Sha256 h;
  h.update(str("pico-dataset v", version, "\ntokenizer ", tokenizer_sha256, "\n"));
  for (const auto* list : {&train, &val})
    for (const auto& s : *list) h.update(str(s.file, " ", s.tokens, " ", s.sha256, "\n"));
  return h.hex_digest();
}

namespace {

json shards_to_json(const std::vector<ShardEntry>& shards) {
  json a = json::array();
  for (const auto& s : shards)
    a.push_back({{"file", s.file}, {"tokens", s.tokens}, {"crc32c", s.crc32c}, {"sha256", s.sha256}});
  return a;
}

std::vector<ShardEntry> shards_from_json(const json& a) {
  std::vector<ShardEntry> out;
  for (const auto& j : a) {
    ShardEntry s;
    s.file = j.at("file").get<std::string>();
    s.tokens = j.at("tokens").get<std::uint64_t>();
    s.crc32c = j.at("crc32c").get<std::uint32_t>();
    s.sha256 = j.at("sha256").get<std::string>();
    if (s.file.find('/') != std::string::npos || s.file.find("..") != std::string::npos)
      throw Error(str("shard name '", s.file, "' leaves the dataset directory"));
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

void Manifest::save(const std::string& dir) const {
  json j = {{"format", "pico-dataset"},
            {"version", version},
            {"tokenizer", {{"file", tokenizer_file}, {"sha256", tokenizer_sha256}, {"vocab_size", vocab_size}}},
            {"train", shards_to_json(train)},
            {"val", shards_to_json(val)},
            {"train_tokens", train_tokens()},
            {"val_tokens", val_tokens()},
            {"sources", sources},
            {"val_fraction", val_fraction},
            {"seed", seed},
            {"dataset_hash", dataset_hash}};
  write_file_atomic(dir + "/manifest.json", j.dump(2) + "\n");
}

Manifest Manifest::load(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  if (!std::filesystem::exists(path))
    throw Error(
        str("no dataset at ", dir, ": ", path, " does not exist"),
        "prepare one with `pico data prepare --input FILE --output DIR --vocab-size N` and set data.path to DIR");
  Manifest m;
  try {
    const json j = json::parse(read_file(path));
    if (j.value("format", "") != "pico-dataset") throw Error("not a pico dataset manifest");
    m.version = j.at("version").get<int>();
    if (m.version != kVersion) throw Error(str("manifest version ", m.version, ", expected ", kVersion));
    const auto& t = j.at("tokenizer");
    m.tokenizer_file = t.at("file").get<std::string>();
    m.tokenizer_sha256 = t.at("sha256").get<std::string>();
    m.vocab_size = t.at("vocab_size").get<std::int32_t>();
    m.train = shards_from_json(j.at("train"));
    m.val = shards_from_json(j.at("val"));
    m.sources = j.value("sources", std::vector<std::string>{});
    m.val_fraction = j.value("val_fraction", 0.0);
    m.seed = j.value("seed", std::uint64_t{0});
    m.dataset_hash = j.at("dataset_hash").get<std::string>();
  } catch (const json::exception& e) {
    throw Error(str("malformed dataset manifest ", path, ": ", e.what()),
                "re-create the dataset with `pico data prepare`");
  } catch (const Error& e) {
    throw Error(str("bad dataset manifest ", path, ": ", e.what()), "re-create the dataset with `pico data prepare`");
  }
  if (m.train.empty())
    throw Error(str("dataset manifest ", path, " lists no training shards"),
                "re-create the dataset with `pico data prepare`");
  if (m.compute_dataset_hash() != m.dataset_hash)
    throw Error(str("dataset manifest ", path, " has been edited: its dataset_hash does not match its contents"),
                "re-create the dataset with `pico data prepare`");
  return m;
}

std::shared_ptr<Dataset> Dataset::open(const std::string& dir, bool verify) {
  auto ds = std::make_shared<Dataset>();
  ds->dir_ = dir;
  ds->manifest_ = Manifest::load(dir);
  const auto& m = ds->manifest_;
  const std::string tok = ds->tokenizer_path();
  if (!std::filesystem::exists(tok))
    throw Error(str("the tokenizer ", tok, " named by ", dir, "/manifest.json is missing"),
                "copy the dataset directory whole, or prepare it again with `pico data prepare`");
  const std::string tok_sha = sha256_file(tok);
  if (tok_sha != m.tokenizer_sha256)
    throw Error(
        str("tokenizer ", tok, " does not match the manifest (sha256 ", tok_sha.substr(0, 12), "…, manifest says ",
            m.tokenizer_sha256.substr(0, 12), "…): the shards were made with another tokenizer"),
        "prepare the dataset again so that tokenizer and shards agree");
  auto open_list = [&](const std::vector<ShardEntry>& list, std::vector<std::unique_ptr<ShardReader>>& out) {
    for (const auto& e : list) {
      const std::string path = dir + "/" + e.file;
      if (!std::filesystem::exists(path))
        throw Error(str("shard ", path, " listed in the manifest is missing"),
                    "copy the dataset directory whole, or prepare it again with `pico data prepare`");
      auto r = std::make_unique<ShardReader>(path, verify);
      if (r->size() != e.tokens || r->header().tokens_crc32c != e.crc32c)
        throw Error(
            str("shard ", path, " does not match the manifest (", r->size(), " tokens, manifest says ", e.tokens, ")"),
            "prepare the dataset again with `pico data prepare`");
      if (static_cast<std::int64_t>(r->header().vocab_size) > m.vocab_size)
        throw Error(
            str("shard ", path, " holds ids up to ", r->header().vocab_size, " but the tokenizer has ", m.vocab_size),
            "prepare the dataset again with `pico data prepare`");
      out.push_back(std::move(r));
    }
  };
  open_list(m.train, ds->train_);
  open_list(m.val, ds->val_);
  return ds;
}

}  // namespace pico::data
