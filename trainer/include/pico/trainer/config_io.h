// pico/trainer/config_io.h — YAML files and `--set key=value` overrides → RunConfig.
//
// The only translation unit that knows yaml-cpp. Unknown keys (with a did-you-mean),
// wrong types and out-of-range values are pico::Errors that name the file, the key, the
// value and what is allowed.
#pragma once

#include <string>
#include <vector>

#include "pico/trainer/run_config.h"

namespace pico::trainer {

// Reads `path`, applies `overrides` ("section.key=value", in order), validates.
// An empty checkpointing.run_name defaults to the file's stem.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from YAML text; `source` names it in errors (e.g. "checkpoint step_000100.h5").
RunConfig parse_run_config(const std::string& yaml, const std::string& source,
                           const std::vector<std::string>& overrides = {});
// Applies overrides to an existing config (no validation).
void apply_overrides(RunConfig& cfg, const std::vector<std::string>& overrides);
// The resolved config as YAML, every key present.
std::string to_yaml(const RunConfig& cfg);
// Every key, with its type and what is allowed ("model.d_model  int  > 0"), for --help.
std::vector<std::string> describe_keys();

}  // namespace pico::trainer
