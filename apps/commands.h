// apps/commands.h — sub-commands register themselves on the CLI11 app.
//
// Each apps/cmd_*.cpp defines one command and registers it with PICO_COMMAND(order, fn);
// main() adds them in `order` (the order of `pico --help`). apps/ is the only place that
// turns errors into exit codes: commands throw pico::Error and main() prints it with its HINT.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace pico::apps {

using CommandRegistrar = std::function<void(CLI::App&)>;
// Returns true so it can initialize a static.
bool add_command(int order, CommandRegistrar registrar);
void register_all_commands(CLI::App& app);

}  // namespace pico::apps

#define PICO_COMMAND_CONCAT2_(a, b) a##b
#define PICO_COMMAND_CONCAT_(a, b) PICO_COMMAND_CONCAT2_(a, b)
#define PICO_COMMAND(order, fn) \
  static const bool PICO_COMMAND_CONCAT_(pico_command_registered_, __LINE__) = ::pico::apps::add_command(order, fn)
