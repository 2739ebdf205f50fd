// checkpoints/ on its own: HDF5 round trips, h5py/h5dump readability, corruption, the
// checkpoint directory (manifest, latest, pruning), safetensors and the HF name mapping.
#include "pico/checkpoints/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "pico/checkpoints/hf_export.h"
#include "pico/checkpoints/store.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/models/decoder.h"
#include "support/test_util.h"

namespace pico::checkpoints {
namespace {

namespace fs = std::filesystem;

// Every supported dtype, several chunks, a scalar, an empty tensor, attributes of each
// type and an empty group.
CheckpointData sample_data() {
  torch::manual_seed(1);
  CheckpointData d;
  d.config_yaml = "model:\n  d_model: 8\n";
  d.set_attr("/", "note", std::string("root attribute"));
  d.set_attr("/train_state", "step", std::int64_t{1234});
  d.set_attr("/train_state", "lr", 0.00125);
  d.set_attr("/train_state", "name", std::string("ünïcode ✓"));
  d.add_group("/optim/outer");
  d.add("/model", "big.weight", torch::randn({700, 513}));  // ~1.4 MB: several 1 MiB chunks
  d.add("/model", "layers.0.norm.weight", torch::randn({513}));
  d.add("/optim/inner/big.weight", "exp_avg", torch::randn({700, 513}, torch::kFloat64));
  d.add("/mixed", "half", torch::randn({3, 5}).to(torch::kFloat16));
  d.add("/mixed", "bf16", torch::randn({4, 6}).to(torch::kBFloat16));
  d.add("/mixed", "i64", torch::arange(-5, 5, torch::kLong));
  d.add("/mixed", "i32", torch::arange(0, 7, torch::kInt));
  d.add("/mixed", "u8", torch::arange(0, 255, torch::kLong).to(torch::kUInt8));
  d.add("/mixed", "mask", torch::tensor({true, false, true}));
  d.add("/mixed", "scalar", torch::tensor(3.5));
  d.add("/mixed", "empty", torch::empty({0, 4}));
  return d;
}

TEST(Checkpoint, RoundTripKeepsEveryTensorBitForBit) {
  test::TempDir dir;
  const auto d = sample_data();
  const auto w = write_checkpoint(dir.file("a.h5"), d);
  EXPECT_EQ(w.sha256, sha256_file(dir.file("a.h5")));
  EXPECT_EQ(w.bytes, fs::file_size(dir.file("a.h5")));
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "temporary left behind";

  const auto r = read_checkpoint(dir.file("a.h5"));
  EXPECT_EQ(r.config_yaml, d.config_yaml);
  EXPECT_EQ(r.attr_int("/train_state", "step"), 1234);
  EXPECT_EQ(r.attr_double("/train_state", "lr"), 0.00125);
  EXPECT_EQ(r.attr_string("/train_state", "name"), "ünïcode ✓");
  EXPECT_EQ(r.attr_string("/", "format"), kFormatName);
  EXPECT_EQ(r.attr_int("/", "format_version"), kFormatVersion);
  EXPECT_TRUE(r.has_group("/optim/outer"));
  ASSERT_EQ(r.tensors.size(), d.tensors.size());
  for (std::size_t i = 0; i < d.tensors.size(); ++i) {
    // File order is write order (creation order is tracked), group by group.
    const auto* got = r.find(d.tensors[i].group, d.tensors[i].name);
    ASSERT_NE(got, nullptr) << d.tensors[i].path();
    EXPECT_EQ(got->tensor.scalar_type(), d.tensors[i].tensor.scalar_type()) << d.tensors[i].path();
    EXPECT_EQ(got->tensor.sizes(), d.tensors[i].tensor.sizes()) << d.tensors[i].path();
    EXPECT_TRUE(torch::equal(got->tensor, d.tensors[i].tensor)) << d.tensors[i].path();
  }
  // Groups in the order of their first tensor, after /config; not alphabetical.
  const auto info = inspect_checkpoint(dir.file("a.h5"), false);
  ASSERT_GE(info.groups.size(), 4u);
  EXPECT_EQ(info.groups[0], "/config");
  EXPECT_EQ(info.groups[1], "/model");
  EXPECT_EQ(info.groups[2], "/optim");
  EXPECT_EQ(info.groups[3], "/optim/inner");
  const auto model = r.in_group("/model");
  ASSERT_EQ(model.size(), 2u);
  EXPECT_EQ(model[0]->name, "big.weight");  // creation order, not name order
  EXPECT_EQ(model[1]->name, "layers.0.norm.weight");
  // Skipped groups are not loaded.
  const auto partial = read_checkpoint(dir.file("a.h5"), {{"/mixed", "/optim"}});
  EXPECT_EQ(partial.find("/mixed", "half"), nullptr);
  EXPECT_EQ(partial.find("/optim/inner/big.weight", "exp_avg"), nullptr);
  EXPECT_NE(partial.find("/model", "big.weight"), nullptr);
}

TEST(Checkpoint, ReadableByH5pyAndH5dumpWithFletcher32OnEveryChunkedDataset) {
  test::TempDir dir;
  const auto d = sample_data();
  write_checkpoint(dir.file("a.h5"), d);
  const auto r =
      test::run_command(test::python() + " " + test::source_dir() + "/tests/python/checkpoint_reference.py layout " +
                        dir.file("a.h5") + " " + dir.file("layout.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(test::read_text(dir.file("layout.json")));
  EXPECT_EQ(j["groups"]["/"]["format"], kFormatName);
  EXPECT_EQ(j["groups"]["/"]["format_version"], kFormatVersion);
  EXPECT_EQ(j["groups"]["/config"]["yaml"], d.config_yaml);
  EXPECT_EQ(j["groups"]["/train_state"]["name"], "ünïcode ✓");
  EXPECT_TRUE(j["groups"].contains("/optim/outer"));
  const std::map<std::string, std::string> numpy_dtype = {
      {"/model/big.weight", "float32"}, {"/optim/inner/big.weight/exp_avg", "float64"},
      {"/mixed/half", "float16"},       {"/mixed/bf16", "float32"},
      {"/mixed/i64", "int64"},          {"/mixed/i32", "int32"},
      {"/mixed/u8", "uint8"},           {"/mixed/mask", "uint8"}};
  for (const auto& e : d.tensors) {
    const auto& ds = j["datasets"][e.path()];
    ASSERT_TRUE(ds.is_object()) << e.path();
    EXPECT_EQ(ds["shape"].get<std::vector<std::int64_t>>(), e.tensor.sizes().vec()) << e.path();
    if (numpy_dtype.count(e.path())) {
      EXPECT_EQ(ds["dtype"], numpy_dtype.at(e.path())) << e.path();
    }
    const bool chunkable = e.tensor.dim() > 0 && e.tensor.numel() > 0;
    EXPECT_EQ(ds["fletcher32"].get<bool>(), chunkable) << e.path();
    EXPECT_EQ(!ds["chunks"].empty(), chunkable) << e.path();
    // h5py's view of the values: the sum, recomputed in float64 (bf16/bool stored as f32/u8).
    const double want = e.tensor.to(torch::kFloat64).sum().item<double>();
    EXPECT_NEAR(ds["sum"].get<double>(), want, 1e-9 * (1 + std::abs(want))) << e.path();
  }
  EXPECT_EQ(j["datasets"]["/mixed/bf16"]["attrs"]["torch_dtype"], "bfloat16");
  // 700 rows of 513 floats, at most 511 rows per 1 MiB chunk: 2 even chunks of 350 rows.
  EXPECT_EQ(j["datasets"]["/model/big.weight"]["chunks"].get<std::vector<int>>(), (std::vector<int>{350, 513}));

  auto h = test::run_command("h5dump -p -H " + dir.file("a.h5"));
  ASSERT_EQ(h.exit_code, 0) << h.output;
  EXPECT_NE(h.output.find("CHECKSUM FLETCHER32"), std::string::npos) << h.output.substr(0, 2000);
  h = test::run_command("h5dump -d /mixed/i64 " + dir.file("a.h5"));
  ASSERT_EQ(h.exit_code, 0) << h.output;
  EXPECT_NE(h.output.find("-5, -4, -3, -2, -1, 0, 1, 2, 3, 4"), std::string::npos) << h.output;
}

// The file offset of `needle`, a run of bytes known to be inside one dataset's data.
std::int64_t find_bytes(const std::string& path, const void* needle, std::size_t n) {
  const std::string hay = read_file(path);
  const auto pos = hay.find(std::string(static_cast<const char*>(needle), n));
  return pos == std::string::npos ? -1 : static_cast<std::int64_t>(pos);
}

TEST(Checkpoint, CorruptDataIsCaughtByFletcher32AndNamed) {
  test::TempDir dir;
  CheckpointData d;
  d.config_yaml = "x: 1\n";
  d.add("/model", "a", torch::arange(0, 100000, torch::kFloat32));
  d.add("/model", "b", torch::full({50000}, 7.0f));
  write_checkpoint(dir.file("c.h5"), d);
  const float marker[4] = {70000.f, 70001.f, 70002.f, 70003.f};  // inside /model/a
  const auto at = find_bytes(dir.file("c.h5"), marker, sizeof marker);
  ASSERT_GT(at, 0);
  {
    std::fstream f(dir.file("c.h5"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(at + 1);
    f.put('\x42');
  }
  try {
    read_checkpoint(dir.file("c.h5"));
    FAIL() << "corrupt data was read without error";
  } catch (const CorruptCheckpoint& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir.file("c.h5")), std::string::npos) << msg;
    EXPECT_NE(msg.find("/model/a"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Fletcher32"), std::string::npos) << msg;
    EXPECT_FALSE(e.hint().empty());
  }
  // inspect reports the one bad dataset and verifies the other.
  const auto info = inspect_checkpoint(dir.file("c.h5"));
  ASSERT_EQ(info.datasets.size(), 2u);
  EXPECT_FALSE(info.datasets[0].verified);
  EXPECT_NE(info.datasets[0].error.find("Fletcher32"), std::string::npos) << info.datasets[0].error;
  EXPECT_TRUE(info.datasets[1].verified);
  EXPECT_FALSE(info.all_verified());
}

TEST(Checkpoint, TruncatedGarbageMissingAndWrongVersionFilesAreRefusedWithHints) {
  test::TempDir dir;
  write_checkpoint(dir.file("ok.h5"), sample_data());
  const std::string bytes = read_file(dir.file("ok.h5"));
  test::write_text(dir.file("truncated.h5"), bytes.substr(0, bytes.size() / 2));
  test::write_text(dir.file("garbage.h5"), "this is not an HDF5 file at all");
  test::write_text(dir.file("empty.h5"), "");
  fs::copy_file(dir.file("ok.h5"), dir.file("v99.h5"));
  const auto py = test::run_command(test::python() + " -c \"import h5py; f = h5py.File('" + dir.file("v99.h5") +
                                    "', 'r+'); f.attrs['format_version'] = 99; f.close()\"");
  ASSERT_EQ(py.exit_code, 0) << py.output;
  for (const auto& [file, expect] : std::vector<std::pair<std::string, std::string>>{{"truncated.h5", "truncated"},
                                                                                     {"garbage.h5", "not an HDF5 file"},
                                                                                     {"empty.h5", "not an HDF5 file"},
                                                                                     {"missing.h5", "does not exist"},
                                                                                     {"v99.h5", "format version 99"}}) {
    try {
      read_checkpoint(dir.file(file));
      ADD_FAILURE() << file << " was read without error";
    } catch (const CorruptCheckpoint& e) {
      EXPECT_NE(std::string(e.what()).find(dir.file(file)), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << file << ": " << e.what();
      EXPECT_FALSE(e.hint().empty()) << file;
    }
    EXPECT_THROW(inspect_checkpoint(dir.file(file)), CorruptCheckpoint) << file;
  }
}

TEST(Checkpoint, FailedWriteThrowsWithHintAndLeavesNoFile) {
  test::TempDir dir;
  try {
    write_checkpoint(dir.file("no/such/dir/x.h5"), sample_data());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir"), std::string::npos) << e.what();
    EXPECT_FALSE(e.hint().empty());
  }
  CheckpointData bad;
  bad.add("/model", "complex", torch::randn({2}, torch::kComplexFloat));
  EXPECT_THROW(write_checkpoint(dir.file("bad.h5"), bad), Error);
  CheckpointData slash;
  slash.add("/model", "a/b", torch::ones({2}));
  EXPECT_THROW(write_checkpoint(dir.file("slash.h5"), slash), Error);
  EXPECT_TRUE(fs::is_empty(dir.path())) << "a failed write left files behind";
}

TEST(CheckpointDir, KeepsLatestKWithManifestShaAndLatestPointer) {
  test::TempDir dir;
  CheckpointDir cd(dir.file("checkpoints"), 2);
  CheckpointData d;
  d.config_yaml = "a: 1\n";
  for (std::int64_t step : {10, 20, 30, 40}) {
    d.tensors.clear();
    d.add("/model", "w", torch::full({1000}, static_cast<float>(step)));
    const auto m = cd.save(step, d);
    EXPECT_EQ(m.file, CheckpointDir::file_name(step));
    EXPECT_EQ(cd.latest(), m.file);
  }
  const auto files = cd.list();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].second, "step_000040.h5");
  EXPECT_EQ(files[1].second, "step_000030.h5");
  const auto manifest = cd.manifest();
  ASSERT_EQ(manifest.size(), 2u);
  for (const auto& e : manifest) {
    EXPECT_EQ(e.sha256, sha256_file(cd.path_of(e.file))) << e.file;
    EXPECT_EQ(e.bytes, fs::file_size(cd.path_of(e.file)));
  }
  const auto j = nlohmann::json::parse(read_file(cd.manifest_path()));
  EXPECT_EQ(j["latest"], "step_000040.h5");
  EXPECT_EQ(test::read_text(cd.latest_path()), "step_000040.h5\n");
  EXPECT_EQ(resolve_checkpoint(dir.file("checkpoints")), cd.path_of("step_000040.h5"));
  EXPECT_EQ(resolve_checkpoint(dir.path()), cd.path_of("step_000040.h5"));  // a run dir holding checkpoints/

  cd.quarantine("step_000040.h5", "test");
  EXPECT_TRUE(fs::exists(cd.path_of("step_000040.h5.invalid")));
  EXPECT_EQ(cd.latest(), "step_000030.h5");
  EXPECT_EQ(cd.manifest().size(), 1u);
  EXPECT_EQ(cd.list().size(), 1u);

  // Temporaries of dead processes go; this process's stay.
  test::write_text(cd.path_of(".step_000050.h5.tmp.999999999"), "x");
  test::write_text(cd.path_of(".step_000050.h5.tmp." + std::to_string(::getpid())), "x");
  cd.remove_stale_temporaries();
  EXPECT_FALSE(fs::exists(cd.path_of(".step_000050.h5.tmp.999999999")));
  EXPECT_TRUE(fs::exists(cd.path_of(".step_000050.h5.tmp." + std::to_string(::getpid()))));

  EXPECT_THROW(CheckpointDir(dir.file("x"), 1), Error);
  EXPECT_EQ(CheckpointDir::parse_step("step_000123.h5"), 123);
  EXPECT_FALSE(CheckpointDir::parse_step("step_12a.h5"));
  EXPECT_FALSE(CheckpointDir::parse_step("step_000123.h5.invalid"));
  EXPECT_THROW(resolve_checkpoint(dir.file("nothing-here")), Error);
}

TEST(CheckpointDir, AsyncSaverWritesInTheBackgroundAndReportsErrors) {
  test::TempDir dir;
  CheckpointDir cd(dir.file("ckpts"), 3);
  {
    AsyncSaver saver(cd);
    for (std::int64_t step = 1; step <= 3; ++step) {
      CheckpointData d;
      d.add("/model", "w", torch::full({100000}, static_cast<float>(step)));
      saver.submit(step, std::move(d));
    }
    const auto last = saver.wait();
    ASSERT_TRUE(last.has_value());
    EXPECT_EQ(last->step, 3);
    EXPECT_FALSE(saver.pending());
  }
  EXPECT_EQ(cd.list().size(), 3u);
  EXPECT_EQ(read_checkpoint(cd.path_of("step_000002.h5")).tensor("/model", "w")[0].item<float>(), 2.0f);

  // A save that fails in the background surfaces at the next wait.
  CheckpointDir broken(dir.file("ckpts/step_000001.h5/sub"), 2);  // a path under a file
  AsyncSaver saver(broken);
  CheckpointData d;
  d.add("/model", "w", torch::ones({3}));
  saver.submit(1, std::move(d));
  EXPECT_THROW(saver.wait(), Error);
}

TEST(HfExport, NameMappingCoversEveryDecoderParameterBothWays) {
  models::ModelConfig c;
  c.d_model = 16;
  c.n_layers = 3;
  c.vocab_size = 50;
  c.max_seq_len = 8;
  c.attention_n_heads = 4;
  c.attention_n_kv_heads = 2;
  c.activation_hidden_dim = 24;
  models::PicoDecoder m(c);
  std::set<std::string> hf;
  for (const auto& [name, p] : m->named_params()) {
    const std::string h = hf_llama_name(name);
    EXPECT_TRUE(hf.insert(h).second) << "two parameters map to " << h;
    EXPECT_EQ(pico_name_from_hf(h), name);
  }
  EXPECT_EQ(hf_llama_name("layers.2.swiglu.w_0.weight"), "model.layers.2.mlp.gate_proj.weight");
  EXPECT_EQ(hf_llama_name("layers.0.swiglu.w_1.weight"), "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(hf_llama_name("layers.0.swiglu.w_2.weight"), "model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(hf_llama_name("layers.1.attention_norm.weight"), "model.layers.1.input_layernorm.weight");
  EXPECT_EQ(hf_llama_name("layers.1.swiglu_norm.weight"), "model.layers.1.post_attention_layernorm.weight");
  EXPECT_EQ(hf_llama_name("layers.1.attention.k_proj.weight"), "model.layers.1.self_attn.k_proj.weight");
  EXPECT_EQ(hf_llama_name("embedding_proj.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(hf_llama_name("output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(hf_llama_name("de_embedding_proj.weight"), "lm_head.weight");
  EXPECT_THROW(hf_llama_name("layers.0.attention.q_proj.bias"), Error);
  EXPECT_THROW(hf_llama_name("something.else"), Error);
}

TEST(HfExport, SafetensorsRoundTripAndMalformedFilesAreRefused) {
  test::TempDir dir;
  NamedTensors t = {{"a", torch::randn({3, 4})},
                    {"b", torch::arange(5, torch::kLong)},
                    {"c", torch::randn({2}).to(torch::kBFloat16)}};
  write_safetensors(dir.file("x.safetensors"), t, {{"format", "pt"}});
  const auto bytes = read_file(dir.file("x.safetensors"));
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u) << "data must start 8-byte aligned";
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["a"]["dtype"], "F32");
  EXPECT_EQ(header["c"]["dtype"], "BF16");
  const auto back = read_safetensors(dir.file("x.safetensors"));
  ASSERT_EQ(back.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back[i].first, t[i].first);
    EXPECT_TRUE(torch::equal(back[i].second, t[i].second)) << t[i].first;
  }
  test::write_text(dir.file("short.safetensors"), bytes.substr(0, 5));
  test::write_text(dir.file("cut.safetensors"), bytes.substr(0, bytes.size() - 8));
  std::string huge = bytes;
  huge[5] = '\x7f';  // header length far beyond the file
  test::write_text(dir.file("huge.safetensors"), huge);
  for (const char* f : {"short.safetensors", "cut.safetensors", "huge.safetensors"}) {
    try {
      read_safetensors(dir.file(f));
      ADD_FAILURE() << f;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
      EXPECT_FALSE(e.hint().empty());
    }
  }
}

}  // namespace
}  // namespace pico::checkpoints
