// pico/common/strings.h — small string helpers used by config and CLI error messages.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pico {

std::vector<std::string> split(std::string_view s, char sep);
std::string trim(std::string_view s);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
bool starts_with(std::string_view s, std::string_view prefix);
bool ends_with(std::string_view s, std::string_view suffix);
std::size_t edit_distance(std::string_view a, std::string_view b);
// The candidate nearest to `word` if it is plausibly a typo of it, else "".
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace pico
