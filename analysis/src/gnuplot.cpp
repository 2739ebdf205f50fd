#include "pico/analysis/gnuplot.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/strings.h"

namespace pico::analysis {
namespace fs = std::filesystem;
namespace {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  for (const auto& dir : split(path, ':')) {
    std::error_code ec;
    const fs::path p = fs::path(dir.empty() ? "." : dir) / program;
    if (fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0) return true;
  }
  return false;
}

}  // namespace

std::string gp_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

void require_gnuplot() {
  if (!on_path("gnuplot"))
    throw Error("gnuplot is not installed, so no PNG plots can be drawn",
                "install it (Debian: apt-get install gnuplot-nox; scripts/setup does), or pass --no-plots");
}

std::string draw_png(const std::string& dir_in, const std::string& base, const std::string& data,
                     const std::string& script) {
  // Absolute: gnuplot runs in this directory.
  const std::string dir = fs::absolute(dir_in).lexically_normal().string();
  make_dirs(dir);
  const std::string stem = dir + "/" + base;
  write_file_atomic(stem + ".dat", data);
  write_file_atomic(stem + ".gp", script);
  const std::string err = stem + ".gnuplot.log";
  const std::string cmd =
      str("cd ", shell_quote(dir), " && gnuplot ", shell_quote(base + ".gp"), " > ", shell_quote(err), " 2>&1");
  const int rc = std::system(cmd.c_str());
  std::string log;
  try {
    log = read_file(err);
  } catch (const Error&) {
  }
  if (rc != 0 || !fs::exists(stem + ".png"))
    throw Error(str("gnuplot failed to draw ", stem, ".png (exit status ", rc, "): ", trim(log)),
                str("the script is ", stem,
                    ".gp; check that gnuplot has the pngcairo terminal (gnuplot -e 'set terminal' | grep pngcairo)"));
  std::error_code ec;
  fs::remove(err, ec);
  return stem + ".png";
}

}  // namespace pico::analysis
