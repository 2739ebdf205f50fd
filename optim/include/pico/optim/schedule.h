// pico/optim/schedule.h — learning-rate schedules as pure functions of the step.
#pragma once

#include <cstdint>
#include <string>

namespace pico::optim {

enum class LrSchedule {
  kLinearWithWarmup,  // pico-train's: 0 → lr over warmup, then linear to 0 at max_steps
  kCosine,            // 0 → lr over warmup, then cosine to lr·min_lr_ratio at max_steps
  kConstant,          // 0 → lr over warmup, then lr
};

LrSchedule parse_lr_schedule(const std::string& name);  // throws pico::Error listing the names
std::string to_string(LrSchedule s);

struct ScheduleConfig {
  LrSchedule kind = LrSchedule::kLinearWithWarmup;
  double lr = 3e-4;
  std::int64_t warmup_steps = 0;
  std::int64_t max_steps = 1;
  double min_lr_ratio = 0.1;  // cosine only
};

// The learning rate for the update that follows `step` completed updates (as torch's
// LambdaLR: the first update uses step 0, so with warmup it has lr 0, as in pico-train).
double lr_at(const ScheduleConfig& cfg, std::int64_t step);

}  // namespace pico::optim
