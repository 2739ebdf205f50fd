#include "pico/comm/curve_keys.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "pico/common/error.h"
#include "pico/common/fs.h"
#include "pico/common/log.h"

namespace pico::comm {

void curve_require_available() {
  if (!zmq_has("curve")) {
    int major = 0, minor = 0, patch = 0;
    zmq_version(&major, &minor, &patch);
    throw Error(str("libzmq ", major, ".", minor, ".", patch, " was built without CURVE security"),
                "install a libzmq built with libsodium (Debian's libzmq5 is), or rebuild libzmq with "
                "--with-libsodium; pico never talks to peers unencrypted");
  }
}

std::string curve_default_key_dir() {
  return pico_home() + "/keys";
}

bool curve_is_valid_key(const std::string& key) {
  if (key.size() != 40) return false;
  std::array<std::uint8_t, 32> bin{};
  return zmq_z85_decode(bin.data(), key.c_str()) != nullptr;
}

std::string curve_key_to_hex(const std::string& z85) {
  std::array<std::uint8_t, 32> bin{};
  if (z85.size() != 40 || zmq_z85_decode(bin.data(), z85.c_str()) == nullptr)
    throw Error(str("'", z85, "' is not a CURVE public key (40 Z85 characters)"));
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (auto b : bin) {
    hex += kHex[b >> 4];
    hex += kHex[b & 15];
  }
  return hex;
}

std::string curve_key_from_text(const std::string& text, const std::string& what) {
  if (curve_is_valid_key(text)) return text;
  std::string lower = text;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (lower.size() == 64 && lower.find_first_not_of("0123456789abcdef") == std::string::npos) {
    std::array<std::uint8_t, 32> bin{};
    for (std::size_t i = 0; i < 32; ++i)
      bin[i] = static_cast<std::uint8_t>(std::stoi(lower.substr(2 * i, 2), nullptr, 16));
    std::array<char, 41> z85{};
    zmq_z85_encode(z85.data(), bin.data(), bin.size());
    return z85.data();
  }
  throw Error(str(what, " '", text, "' is not a public key (", text.size(), " characters)"),
              "pass the 64 hex digits the broker printed (or its 40-character Z85 form, quoted)");
}

CurveKeyPair curve_generate_keypair() {
  curve_require_available();
  std::array<char, 41> pub{}, sec{};
  if (zmq_curve_keypair(pub.data(), sec.data()) != 0)
    throw Error(str("zmq_curve_keypair failed: ", zmq_strerror(zmq_errno())));
  return {pub.data(), sec.data()};
}

namespace {

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

std::string format_keyfile(const CurveKeyPair& k) {
  return str("# pico CURVE key pair. Keep this file secret (mode 0600).\n", "public-key = ", k.public_key, "\n",
             "secret-key = ", k.secret_key, "\n");
}

CurveKeyPair parse_keyfile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error(str("cannot stat key file ", path, ": ", std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) throw Error(str("key file ", path, " is not a regular file"));
  if (st.st_mode & 077)
    throw Error(str("key file ", path, " is accessible by group or others (mode 0", std::oct, (st.st_mode & 0777), ")"),
                str("chmod 600 ", path, " (and consider the secret key leaked: delete the file to get a new pair)"));
  if (st.st_size > 4096) throw Error(str("key file ", path, " is ", st.st_size, " bytes, expected about 150"));
  const std::string text = read_file(path);
  CurveKeyPair k;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    const auto eq = line.find(" = ");
    const std::string key = eq == std::string::npos ? "" : line.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : line.substr(eq + 3);
    if (key == "public-key") {
      k.public_key = value;
    } else if (key == "secret-key") {
      k.secret_key = value;
    } else {
      throw Error(str("key file ", path, " line ", lineno, ": expected 'public-key = …' or 'secret-key = …'"),
                  str("delete ", path, " to generate a new key pair"));
    }
  }
  if (!curve_is_valid_key(k.public_key) || !curve_is_valid_key(k.secret_key))
    throw Error(str("key file ", path, " lacks a valid 40-character Z85 public-key or secret-key"),
                str("delete ", path, " to generate a new key pair"));
  std::array<char, 41> derived{};
  if (zmq_curve_public(derived.data(), k.secret_key.c_str()) != 0 || k.public_key != derived.data())
    throw Error(str("key file ", path, ": the public key does not belong to the secret key"),
                str("delete ", path, " to generate a new key pair"));
  return k;
}

void make_private_dir(const std::string& dir) {
  make_dirs(dir);
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0 && (st.st_mode & 077) && ::chmod(dir.c_str(), 0700) != 0)
    throw Error(str("cannot restrict key directory ", dir, " to mode 0700: ", std::strerror(errno)));
}

}  // namespace

CurveKeyPair curve_load_or_create_keypair(const std::string& dir, const std::string& name) {
  curve_require_available();
  if (!valid_name(name))
    throw Error(str("bad key name '", name, "'"), "use letters, digits, '.', '_' and '-' (e.g. worker-0)");
  const std::string path = dir + "/" + name + ".key";
  if (::access(path.c_str(), F_OK) == 0) return parse_keyfile(path);

  make_private_dir(dir);
  const CurveKeyPair fresh = curve_generate_keypair();
  const std::string text = format_keyfile(fresh);
  // Write a private temporary, fsync, then link() it into place: link fails if another process
  // created the file first, and then both use that one.
  static std::atomic<unsigned> counter{0};
  const std::string tmp = str(dir, "/.", name, ".key.tmp.", ::getpid(), ".", counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw Error(str("cannot create ", tmp, ": ", std::strerror(errno)), "check permissions of " + dir);
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       ::fchmod(fd, 0600) == 0 && ::fsync(fd) == 0;
  const int write_errno = errno;
  ::close(fd);
  if (!written) {
    ::unlink(tmp.c_str());
    throw Error(str("cannot write key file ", tmp, ": ", std::strerror(write_errno)), "check free disk space");
  }
  const int linked = ::link(tmp.c_str(), path.c_str());
  const int link_errno = errno;
  ::unlink(tmp.c_str());
  if (linked != 0 && link_errno != EEXIST)
    throw Error(str("cannot create key file ", path, ": ", std::strerror(link_errno)));
  fsync_path(dir);
  return parse_keyfile(path);
}

IdentityLease::~IdentityLease() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the flock
}

namespace {

// The pid written into a lock file by its holder, or 0.
long lock_holder(int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  return n > 0 ? std::strtol(buf, nullptr, 10) : 0;
}

}  // namespace

IdentityLease lease_identity(const std::string& dir, const std::string& name, bool exact) {
  curve_require_available();
  if (!valid_name(name))
    throw Error(str("bad key name '", name, "'"), "use letters, digits, '.', '_' and '-' (e.g. worker-0)");
  make_private_dir(dir);
  long first_holder = 0;
  for (int i = 1; i <= (exact ? 1 : 64); ++i) {
    const std::string candidate = i == 1 ? name : str(name, "-", i);
    const std::string lock_path = str(dir, "/", candidate, ".key.lock");
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
      throw Error(str("cannot open ", lock_path, ": ", std::strerror(errno)), "check the permissions of " + dir);
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      const std::string pid = std::to_string(::getpid()) + "\n";
      if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
        log_debug("cannot record the pid in ", lock_path, ": ", std::strerror(errno));  // only for messages
      try {
        return IdentityLease(candidate, curve_load_or_create_keypair(dir, candidate), fd);
      } catch (...) {
        ::close(fd);
        throw;
      }
    }
    const int lock_errno = errno;
    if (i == 1) first_holder = lock_holder(fd);
    ::close(fd);
    if (lock_errno != EWOULDBLOCK)
      throw Error(str("cannot lock ", lock_path, ": ", std::strerror(lock_errno)),
                  "pico locks an identity while it uses it; the key directory must be on a local file system");
  }
  const std::string who = first_holder > 0 ? str("process ", first_holder) : std::string("another process");
  if (exact)
    throw Error(str("identity '", name, "' is in use by ", who, " on this machine (", dir, "/", name, ".key.lock)"),
                "two processes never take part as one contributor: give this one its own, e.g. --identity " + name +
                    "-2, or leave --identity out to get a free one");
  throw Error(str("identities '", name, "' to '", name, "-64' are all in use by other processes on this machine"),
              "stop some of them, or give this one an identity of its own with --identity NAME");
}

}  // namespace pico::comm
