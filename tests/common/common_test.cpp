#include <gtest/gtest.h>

#include <filesystem>

#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/hash.h"
#include "pico/common/progress.h"
#include "pico/common/strings.h"
#include "support/test_util.h"

namespace pico {
namespace {

TEST(Hash, Crc32cKnownVectors) {
  // RFC 3720 check value and an iSCSI test vector (32 bytes of zeros).
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(crc32c("", 0), 0u);
}

TEST(Hash, Crc32cIsIncremental) {
  std::string s(1000, '\0');
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>(i * 7 + 3);
  for (std::size_t cut : {0u, 1u, 7u, 8u, 9u, 500u, 999u, 1000u}) {
    const auto a = crc32c(s.data(), cut);
    EXPECT_EQ(crc32c(s.data() + cut, s.size() - cut, a), crc32c(s.data(), s.size())) << "cut " << cut;
  }
}

TEST(Hash, Sha256KnownVectors) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 h;
  h.update("a");
  h.update("bc");
  EXPECT_EQ(h.hex_digest(), sha256_hex("abc"));
}

TEST(Hash, Mix64Spreads) {
  EXPECT_NE(mix64(1, 2), mix64(2, 1));
  EXPECT_NE(mix64(0), mix64(1));
}

TEST(Fs, AtomicWriteAndRead) {
  test::TempDir dir;
  const auto path = dir.file("x.bin");
  write_file_atomic(path, "hello");
  EXPECT_EQ(read_file(path), "hello");
  write_file_atomic(path, "bye");
  EXPECT_EQ(read_file(path), "bye");
  // no temporary files left behind
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(Fs, MappedFile) {
  test::TempDir dir;
  write_file_atomic(dir.file("a"), "abcdef");
  write_file_atomic(dir.file("empty"), "");
  MappedFile a(dir.file("a"));
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a.data()), a.size()), "abcdef");
  MappedFile e(dir.file("empty"));
  EXPECT_EQ(e.size(), 0u);
  EXPECT_THROW(MappedFile(dir.file("missing")), Error);
}

TEST(Errors, CheckMacrosPrintBothValues) {
  try {
    PICO_CHECK_EQ(2 + 2, 5, "arithmetic");
    FAIL() << "no throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("(4 vs 5)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("common_test.cpp"), std::string::npos) << msg;
    EXPECT_NE(msg.find("arithmetic"), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(PICO_CHECK(true, "never"));
}

TEST(Strings, SplitTrimJoin) {
  EXPECT_EQ(split("a,b,,c", ','), (std::vector<std::string>{"a", "b", "", "c"}));
  EXPECT_EQ(trim("  x y \n"), "x y");
  EXPECT_EQ(join({"a", "b"}, ", "), "a, b");
}

TEST(Strings, ClosestMatch) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  const std::vector<std::string> keys = {"model.d_model", "model.n_layers", "training.max_steps"};
  EXPECT_EQ(closest_match("model.d_modle", keys), "model.d_model");
  EXPECT_EQ(closest_match("something.else.entirely", keys), "");
}

TEST(Format, DurationsAndBytes) {
  EXPECT_EQ(format_duration(12.34), "12.3s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_bytes(1500), "1.5 KB");
  EXPECT_EQ(format_bytes(999), "999 B");
}

}  // namespace
}  // namespace pico
