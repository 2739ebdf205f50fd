// pico/common/error.h — the one error type pico throws, and CHECK macros.
//
// User-facing failures (bad config, corrupt file, refused join) throw pico::Error with a
// message that names the file/key/value and a HINT for the fix. Broken invariants use
// PICO_CHECK*, which also throw pico::Error (with file and line) rather than abort, so a
// long-running contributor can log and carry on. Only apps/ turns errors into exit codes.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace pico {

class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, std::string hint = "")
      : std::runtime_error(std::move(message)), hint_(std::move(hint)) {}
  const std::string& hint() const noexcept { return hint_; }

 private:
  std::string hint_;
};

// str("a", 1, 'b') == "a1b": concatenation through operator<<. A function object rather than
// a function template, so that argument-dependent lookup never pulls in c10::str.
inline constexpr auto str = [](const auto&... args) -> std::string {
  std::ostringstream os;
  if constexpr (sizeof...(args) > 0) (os << ... << args);
  return os.str();
};

namespace detail {
[[noreturn]] void check_failed(const char* file, int line, const char* expr, const std::string& msg);
}  // namespace detail

}  // namespace pico

#define PICO_CHECK(cond, ...)                                                            \
  do {                                                                                   \
    if (!(cond)) [[unlikely]]                                                            \
      ::pico::detail::check_failed(__FILE__, __LINE__, #cond, ::pico::str(__VA_ARGS__)); \
  } while (0)

#define PICO_CHECK_OP_(a, b, op, ...)                                                                \
  do {                                                                                               \
    const auto& pico_a_ = (a);                                                                       \
    const auto& pico_b_ = (b);                                                                       \
    if (!(pico_a_ op pico_b_)) [[unlikely]]                                                          \
      ::pico::detail::check_failed(__FILE__, __LINE__, #a " " #op " " #b,                            \
                                   ::pico::str("(", pico_a_, " vs ", pico_b_, ") ", ##__VA_ARGS__)); \
  } while (0)

#define PICO_CHECK_EQ(a, b, ...) PICO_CHECK_OP_(a, b, ==, ##__VA_ARGS__)
#define PICO_CHECK_NE(a, b, ...) PICO_CHECK_OP_(a, b, !=, ##__VA_ARGS__)
#define PICO_CHECK_LT(a, b, ...) PICO_CHECK_OP_(a, b, <, ##__VA_ARGS__)
#define PICO_CHECK_LE(a, b, ...) PICO_CHECK_OP_(a, b, <=, ##__VA_ARGS__)
#define PICO_CHECK_GT(a, b, ...) PICO_CHECK_OP_(a, b, >, ##__VA_ARGS__)
#define PICO_CHECK_GE(a, b, ...) PICO_CHECK_OP_(a, b, >=, ##__VA_ARGS__)
