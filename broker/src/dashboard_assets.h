// broker/src/dashboard_assets.h — the dashboard's page, script and style, compiled into the
// binary (generated from broker/web/ by broker/embed_assets.cmake). Internal to the broker.
#pragma once

#include <cstddef>

namespace pico::broker {

struct DashboardAsset {
  const char* path;  // URL path, e.g. "/dashboard.js"
  const char* content_type;
  const unsigned char* data;  // `size` bytes (and a trailing 0 not counted)
  std::size_t size;
};

extern const DashboardAsset kDashboardAssets[];
extern const std::size_t kDashboardAssetCount;

}  // namespace pico::broker
