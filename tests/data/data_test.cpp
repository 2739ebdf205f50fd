#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/strings.h"
#include "pico/data/manifest.h"
#include "pico/data/prepare.h"
#include "pico/data/sampler.h"
#include "pico/data/shard.h"
#include "pico/data/tokenizer.h"
#include "support/test_util.h"

namespace pico::data {
namespace {

// Expects `fn` to throw pico::Error whose message contains every one of `needles`.
template <typename Fn>
void expect_error(Fn&& fn, std::vector<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "expected pico::Error";
  } catch (const Error& e) {
    const std::string msg = std::string(e.what()) + " | HINT: " + e.hint();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    EXPECT_FALSE(e.hint().empty()) << "no HINT in: " << msg;
  }
}

void patch_byte(const std::string& path, std::size_t offset, char value) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(value);
}

TEST(Shard, RoundTripsBothDtypes) {
  test::TempDir dir;
  for (std::uint32_t vocab : {4096u, 100000u}) {
    std::vector<std::int32_t> toks;
    for (int i = 0; i < 1000; ++i) toks.push_back((i * 7919) % static_cast<int>(vocab));
    const auto path = dir.file("s" + std::to_string(vocab) + ".bin");
    const auto h = write_shard(path, toks, vocab);
    EXPECT_EQ(h.token_bytes, vocab <= 65536 ? 2u : 4u);
    ShardReader r(path);
    ASSERT_EQ(r.size(), toks.size());
    std::vector<std::int64_t> out(toks.size());
    r.read(0, toks.size(), out.data());
    for (std::size_t i = 0; i < toks.size(); ++i) ASSERT_EQ(out[i], toks[i]);
    EXPECT_EQ(std::filesystem::file_size(path), kShardHeaderSize + toks.size() * h.token_bytes);
  }
}

class ShardCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("train_00000.bin");
    std::vector<std::int32_t> toks(500);
    for (int i = 0; i < 500; ++i) toks[i] = i;
    write_shard(path_, toks, 1000);
  }
  test::TempDir dir_;
  std::string path_;
};

TEST_F(ShardCorruption, Truncated) {
  std::filesystem::resize_file(path_, kShardHeaderSize + 100);
  expect_error([&] { ShardReader r(path_); }, {path_, "truncated"});
  std::filesystem::resize_file(path_, 10);
  expect_error([&] { ShardReader r(path_); }, {path_, "truncated"});
}

TEST_F(ShardCorruption, FlippedTokenByte) {
  patch_byte(path_, kShardHeaderSize + 37, 0x55);
  expect_error([&] { ShardReader r(path_); }, {path_, "corrupt"});
  // Without verification the structure is still valid (this is what data.verify=false does).
  EXPECT_NO_THROW(ShardReader(path_, /*verify_tokens=*/false));
}

TEST_F(ShardCorruption, BadMagicVersionAndHeader) {
  patch_byte(path_, 8, 9);  // version 9
  expect_error([&] { ShardReader r(path_); }, {path_, "version 9"});
  patch_byte(path_, 8, 1);
  patch_byte(path_, 17, 0x7f);  // token count, caught by the header checksum
  expect_error([&] { ShardReader r(path_); }, {path_, "corrupt header"});
  patch_byte(path_, 0, 'X');
  expect_error([&] { ShardReader r(path_); }, {path_, "not a pico token shard"});
}

TEST(Permutation, IsABijection) {
  for (std::uint64_t n : {1ull, 2ull, 3ull, 7ull, 64ull, 1000ull, 4097ull}) {
    Permutation p(n, 12345);
    std::set<std::uint64_t> seen;
    for (std::uint64_t i = 0; i < n; ++i) {
      const auto v = p(i);
      ASSERT_LT(v, n);
      seen.insert(v);
    }
    EXPECT_EQ(seen.size(), n);
  }
  // Different keys give different orders.
  Permutation a(1000, 1), b(1000, 2);
  int same = 0;
  for (std::uint64_t i = 0; i < 1000; ++i) same += a(i) == b(i);
  EXPECT_LT(same, 20);
}

// One prepared dataset shared by the tests below (tokenizer training takes ~1 s).
class PreparedData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    PrepareOptions o;
    o.inputs = {test::test_data("kjv_small.txt")};
    o.output_dir = dir_->file("ds");
    o.vocab_size = 512;
    o.num_shards = 4;
    o.val_fraction = 0.1;
    manifest_ = new Manifest(prepare_dataset(o));
  }
  static void TearDownTestSuite() {
    delete manifest_;
    delete dir_;
  }
  static std::string ds() { return dir_->file("ds"); }
  static test::TempDir* dir_;
  static Manifest* manifest_;
};
test::TempDir* PreparedData::dir_ = nullptr;
Manifest* PreparedData::manifest_ = nullptr;

TEST_F(PreparedData, ManifestDescribesShards) {
  const auto ds_ = Dataset::open(ds());
  const auto& m = ds_->manifest();
  EXPECT_EQ(m.train.size(), 4u);
  EXPECT_EQ(m.val.size(), 1u);
  EXPECT_EQ(m.vocab_size, 512);
  EXPECT_EQ(m.dataset_hash, m.compute_dataset_hash());
  // ~10% held out (blocks are chosen by hash, so allow slack)
  const double val_share = static_cast<double>(m.val_tokens()) / static_cast<double>(m.val_tokens() + m.train_tokens());
  EXPECT_GT(val_share, 0.03);
  EXPECT_LT(val_share, 0.2);
  // shards are similar in size (round-robin blocks)
  for (const auto& s : m.train)
    EXPECT_NEAR(static_cast<double>(s.tokens), m.train_tokens() / 4.0, m.train_tokens() * 0.05);
  // preparing again gives the same dataset hash (deterministic)
  PrepareOptions o;
  o.inputs = {test::test_data("kjv_small.txt")};
  o.output_dir = dir_->file("ds_again");
  o.tokenizer = ds() + "/tokenizer.model";
  o.num_shards = 4;
  o.val_fraction = 0.1;
  EXPECT_EQ(prepare_dataset(o).dataset_hash, m.dataset_hash);
}

TEST_F(PreparedData, TokenizerRoundTripsAndMatchesPythonSentencepiece) {
  const auto tok = Tokenizer::load(ds() + "/tokenizer.model");
  const std::string text = "In the beginning God created the heaven and the earth. 1234 ünïcödé ✓";
  const auto ids = tok.encode(text);
  EXPECT_EQ(tok.decode(ids), text);  // byte fallback: every string round-trips
  // The same ids from Debian's python3-sentencepiece, an independent front end.
  test::TempDir tmp;
  test::write_text(tmp.file("in.txt"), text);
  const auto r = test::run_command(test::python() +
                                   " -c \"import sentencepiece as s,sys; p=s.SentencePieceProcessor(model_file='" +
                                   ds() + "/tokenizer.model'); print(' '.join(map(str,p.encode(open('" +
                                   tmp.file("in.txt") + "',encoding='utf-8').read()))))\"");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string mine;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) mine += ' ';  // not (i ? " " : "") + …: g++ 12's -Wrestrict false positive (GCC bug 105329)
    mine += std::to_string(ids[i]);
  }
  EXPECT_EQ(trim(r.output), mine);
}

TEST_F(PreparedData, SamplerIsDeterministicAndCoversEveryWindowOncePerEpoch) {
  const auto d = Dataset::open(ds());
  const BatchSampler a(train_stream(*d, {0, 2}), 32, 7, 0), b(train_stream(*d, {0, 2}), 32, 7, 0);
  const BatchSampler c(train_stream(*d, {0, 2}), 32, 8, 0);
  const auto ba = a.batch(100, 4), bb = b.batch(100, 4), bc = c.batch(100, 4);
  EXPECT_EQ(ba.inputs, bb.inputs);
  EXPECT_NE(ba.inputs, bc.inputs);
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t + 1 < 32; ++t) EXPECT_EQ(ba.targets[r * 32 + t], ba.inputs[r * 32 + t + 1]);
  // One epoch = num_windows samples: every window's first token position appears once.
  const std::uint64_t w = a.num_windows();
  std::multiset<std::vector<std::int64_t>> seen;
  std::set<std::vector<std::int64_t>> expected;
  for (std::uint64_t i = 0; i < w; ++i) {
    const auto s = a.batch(i, 1).inputs;
    seen.insert(s);
    expected.insert(a.sequential(i, 1).inputs);
  }
  EXPECT_EQ(std::set<std::vector<std::int64_t>>(seen.begin(), seen.end()), expected);
}

TEST_F(PreparedData, ShardAssignment) {
  EXPECT_EQ(assign_shards(0, 2, 4), (std::vector<std::size_t>{0, 2}));
  EXPECT_EQ(assign_shards(1, 2, 4), (std::vector<std::size_t>{1, 3}));
  EXPECT_EQ(assign_shards(5, 8, 4), (std::vector<std::size_t>{1}));
}

TEST_F(PreparedData, TokenizerThatDoesNotMatchTheManifestIsRefused) {
  test::TempDir tmp;
  std::filesystem::copy(ds(), tmp.file("ds"), std::filesystem::copy_options::recursive);
  // A different tokenizer (other vocab size) in place of the original.
  PrepareOptions o;
  o.inputs = {test::test_data("kjv_small.txt")};
  o.output_dir = tmp.file("other");
  o.vocab_size = 400;
  o.num_shards = 1;
  prepare_dataset(o);
  std::filesystem::copy_file(tmp.file("other/tokenizer.model"), tmp.file("ds/tokenizer.model"),
                             std::filesystem::copy_options::overwrite_existing);
  expect_error([&] { Dataset::open(tmp.file("ds")); }, {"tokenizer", "does not match the manifest"});
}

TEST_F(PreparedData, MissingOrCorruptShardsAndEditedManifestsAreRefused) {
  test::TempDir tmp;
  std::filesystem::copy(ds(), tmp.file("ds"), std::filesystem::copy_options::recursive);
  const std::string shard = tmp.file("ds/train_00001.bin");
  patch_byte(shard, kShardHeaderSize + 3, 0x11);
  expect_error([&] { Dataset::open(tmp.file("ds")); }, {"train_00001.bin", "corrupt"});
  std::filesystem::remove(shard);
  expect_error([&] { Dataset::open(tmp.file("ds")); }, {"train_00001.bin", "missing"});
  // Editing the manifest breaks its dataset hash.
  std::string m = read_file(tmp.file("ds/manifest.json"));
  const auto pos = m.find("\"tokens\": ");
  m.insert(pos + 10, "1");
  write_file_atomic(tmp.file("ds/manifest.json"), m);
  expect_error([&] { Dataset::open(tmp.file("ds")); }, {"manifest.json"});
  expect_error([&] { Dataset::open(tmp.file("nope")); }, {"nope", "pico data prepare"});
}

TEST(Prepare, BadInputsGetClearErrors) {
  test::TempDir tmp;
  PrepareOptions o;
  o.output_dir = tmp.file("out");
  o.inputs = {tmp.file("missing.txt")};
  expect_error([&] { prepare_dataset(o); }, {"missing.txt", "does not exist"});
  test::write_text(tmp.file("empty.txt"), "\n  \n\n");
  o.inputs = {tmp.file("empty.txt")};
  expect_error([&] { prepare_dataset(o); }, {"empty.txt", "empty"});
  o.inputs = {tmp.path()};
  expect_error([&] { prepare_dataset(o); }, {"directory"});
  test::write_text(tmp.file("tiny.txt"), "one line only\n");
  o.inputs = {tmp.file("tiny.txt")};
  expect_error([&] { prepare_dataset(o); }, {"too small"});
}

}  // namespace
}  // namespace pico::data
