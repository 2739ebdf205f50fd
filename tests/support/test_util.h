// tests/support/test_util.h — temporary directories, running commands, file helpers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pico::test {

// A fresh directory under $TMPDIR, removed with everything in it when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `command` through /bin/sh and captures its output.
CommandResult run_command(const std::string& command);

// Debian's python3 (the one with python3-torch, numpy, scipy, h5py, sentencepiece).
std::string python();
std::string source_dir();
std::string pico_binary();
// The same command line with test seams (tests/support/seams.cpp), for misbehaving members.
std::string seams_binary();
// A file under tests/fixtures/ (reference data copied into the project).
std::string test_data(const std::string& name);

void write_text(const std::string& path, const std::string& text);
std::string read_text(const std::string& path);

}  // namespace pico::test
