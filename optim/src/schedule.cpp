#include "pico/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "pico/common/error.h"

namespace pico::optim {

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "linear_with_warmup") return LrSchedule::kLinearWithWarmup;
  if (name == "cosine" || name == "cosine_with_warmup") return LrSchedule::kCosine;
  if (name == "constant" || name == "constant_with_warmup") return LrSchedule::kConstant;
  throw Error(str("unknown lr_scheduler '", name, "'"), "use linear_with_warmup, cosine or constant");
}

std::string to_string(LrSchedule s) {
  switch (s) {
    case LrSchedule::kLinearWithWarmup:
      return "linear_with_warmup";
    case LrSchedule::kCosine:
      return "cosine";
    case LrSchedule::kConstant:
      return "constant";
  }
  return "?";
}

double lr_at(const ScheduleConfig& cfg, std::int64_t step) {
  const double s = static_cast<double>(step);
  const double warm = static_cast<double>(cfg.warmup_steps);
  const double max_steps = static_cast<double>(cfg.max_steps);
  if (step < cfg.warmup_steps) return cfg.lr * s / std::max(1.0, warm);
  switch (cfg.kind) {
    case LrSchedule::kLinearWithWarmup:
      return cfg.lr * std::max(0.0, (max_steps - s) / std::max(1.0, max_steps - warm));
    case LrSchedule::kCosine: {
      const double progress = std::clamp((s - warm) / std::max(1.0, max_steps - warm), 0.0, 1.0);
      const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
      return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine);
    }
    case LrSchedule::kConstant:
      return cfg.lr;
  }
  return cfg.lr;
}

}  // namespace pico::optim
