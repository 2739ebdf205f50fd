#include <algorithm>
#include <vector>

#include "commands.h"

namespace pico::apps {
namespace {
std::vector<std::pair<int, CommandRegistrar>>& registry() {
  static std::vector<std::pair<int, CommandRegistrar>> r;
  return r;
}
}  // namespace

bool add_command(int order, CommandRegistrar registrar) {
  registry().emplace_back(order, std::move(registrar));
  return true;
}

void register_all_commands(CLI::App& app) {
  auto& r = registry();
  std::stable_sort(r.begin(), r.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [order, fn] : r) fn(app);
}

}  // namespace pico::apps
