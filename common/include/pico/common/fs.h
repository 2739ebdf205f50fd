// pico/common/fs.h — files that survive crashes, and memory-mapped reading.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pico {

// The whole file as bytes; throws pico::Error naming the path.
std::string read_file(const std::string& path);

// Writes `bytes` to a temporary file next to `path`, fsyncs it, renames it over `path` and
// fsyncs the directory: a crash leaves either the old file or the new one, never a mix.
void write_file_atomic(const std::string& path, std::string_view bytes, int mode = 0644);

// fsync a file or directory by path (throws on failure).
void fsync_path(const std::string& path);

// Create the directory and its parents; throws pico::Error naming the path.
void make_dirs(const std::string& path);

// Read-only memory map of a whole file. Empty files map to data() == nullptr, size() == 0.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);  // throws pico::Error naming the path
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void reset();
  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// The pico user directory: $PICO_HOME, else $XDG_CONFIG_HOME/pico, else ~/.config/pico.
std::string pico_home();

}  // namespace pico
