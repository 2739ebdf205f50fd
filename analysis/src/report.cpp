// CSV, JSON, gnuplot PNGs and the summary table (see report.h).
#include "pico/analysis/report.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "pico/analysis/gnuplot.h"
#include "pico/common/fs.h"
#include "pico/common/log.h"
#include "pico/common/progress.h"
#include "pico/common/strings.h"

namespace pico::analysis {
namespace {

namespace fs = std::filesystem;

// Shortest text that reads back as the same double; "nan", "inf", "-inf" otherwise.
std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::string short_number(double v) {
  if (!std::isfinite(v)) return number_text(v);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string opt_text(const std::optional<std::int64_t>& v) {
  return v ? std::to_string(*v) : "";
}

// Layers in model order: embedding_proj, 0, 1, ..., output_norm, de_embedding_proj, all.
std::int64_t layer_order(const std::string& layer) {
  if (!layer.empty() && layer.find_first_not_of("0123456789") == std::string::npos) return std::stoll(layer);
  if (layer == "embedding_proj") return -1;
  if (layer == "output_norm") return 1'000'000;
  if (layer == "de_embedding_proj") return 1'000'001;
  if (layer == "all") return 1'000'003;
  return 1'000'002;
}

std::string layer_label(const std::string& layer) {
  return layer_order(layer) >= 0 && layer_order(layer) < 1'000'000 ? "layer " + layer : layer;
}

struct SeriesKey {
  std::string metric, component, data_type, data_split, contributor;
  auto tie() const { return std::tie(metric, component, data_type, data_split, contributor); }
  bool operator<(const SeriesKey& o) const { return tie() < o.tie(); }
};

std::string panel_title(const SeriesKey& k) {
  std::vector<std::string> parts;
  if (!k.component.empty()) parts.push_back(k.component);
  if (!k.data_type.empty()) parts.push_back(k.data_type);
  if (!k.data_split.empty()) parts.push_back(k.data_split);
  if (!k.contributor.empty())
    parts.push_back(k.contributor.find('-') != std::string::npos ? "contributors " + k.contributor
                                                                 : "contributor " + k.contributor);
  return join(parts, " · ");
}

}  // namespace

void write_csv(const std::string& path, const std::vector<Row>& rows) {
  std::ostringstream os;
  os << "metric,component,data_type,data_split,layer,step,value,head,contributor,round,target_step\n";
  for (const auto& r : rows)
    os << csv_field(r.metric) << ',' << csv_field(r.component) << ',' << r.data_type << ',' << r.data_split << ','
       << csv_field(r.layer) << ',' << r.step << ',' << number_text(r.value) << ',' << r.head << ',' << r.contributor
       << ',' << opt_text(r.round) << ',' << opt_text(r.target_step) << '\n';
  write_file_atomic(path, os.str());
}

void write_json(const std::string& path, const AnalysisResult& result, const AnalysisConfig& cfg) {
  nlohmann::json meta;
  meta["analysis_name"] = result.analysis_name;
  meta["run_path"] = result.run_path;
  meta["checkpoints_dir"] = result.layout.checkpoints_dir;
  meta["contributors"] = result.layout.contributors.size();
  meta["steps"] = result.steps;
  meta["model"] = {{"n_layers", result.shape.n_layers},
                   {"d_model", result.shape.d_model},
                   {"attention_n_heads", result.shape.n_heads},
                   {"attention_n_kv_heads", result.shape.n_kv_heads},
                   {"outer_inner_steps", result.shape.outer_inner_steps}};
  nlohmann::json metrics = nlohmann::json::array();
  for (const auto& m : cfg.metrics) {
    nlohmann::json j{{"metric_name", m.metric_name}, {"output_name", m.output_name()}, {"data_split", m.data_split}};
    if (m.target_checkpoint) j["target_checkpoint"] = *m.target_checkpoint;
    metrics.push_back(j);
  }
  meta["metrics"] = metrics;
  meta["notes"] = result.notes;
  meta["seconds"] = result.profile.total_seconds;
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : result.rows) {
    nlohmann::json j{{"metric", r.metric},         {"component", r.component}, {"data_type", r.data_type},
                     {"data_split", r.data_split}, {"layer", r.layer},         {"step", r.step}};
    if (std::isfinite(r.value)) {
      j["value"] = r.value;
    } else {
      j["value"] = nullptr;
      j["value_text"] = number_text(r.value);
    }
    if (!r.head.empty()) j["head"] = std::stoll(r.head);
    if (!r.contributor.empty()) j["contributor"] = r.contributor;
    if (r.round) j["round"] = *r.round;
    if (r.target_step) j["target_step"] = *r.target_step;
    rows.push_back(std::move(j));
  }
  nlohmann::json doc{{"analysis", meta}, {"rows", rows}};
  write_file_atomic(path, doc.dump(1) + "\n");
}

std::vector<std::string> write_plots(const std::string& out_dir, const std::vector<Row>& rows) {
  // Absolute: gnuplot runs in this directory, and the paths below must hold there too.
  const std::string dir = fs::absolute(out_dir).lexically_normal().string();
  try {
    require_gnuplot();
  } catch (const Error&) {
    throw Error("gnuplot is not installed, so no PNG plots were made (metrics.csv and metrics.json are written)",
                "install it (Debian: apt-get install gnuplot-nox), or pass --no-plots");
  }
  // metric → panel → layer → (step, value)
  std::map<std::string, std::map<SeriesKey, std::map<std::string, std::vector<std::pair<std::int64_t, double>>>>> data;
  std::vector<std::string> metric_order;
  for (const auto& r : rows) {
    if (!r.head.empty()) continue;
    if (!data.count(r.metric)) metric_order.push_back(r.metric);
    SeriesKey k{r.metric, r.component, r.data_type, r.data_split, r.contributor};
    data[r.metric][k][r.layer].emplace_back(r.step, r.value);
  }
  std::vector<std::string> files;
  constexpr std::size_t kMaxPanels = 24;
  for (const auto& metric : metric_order) {
    auto& panels = data[metric];
    const std::string base = dir + "/" + metric;
    std::ostringstream dat, gp;
    std::size_t n_panels = std::min(panels.size(), kMaxPanels);
    if (panels.size() > kMaxPanels)
      log_warn("plot ", metric, ": ", panels.size(), " panels, drawing the first ", kMaxPanels,
               " (all values are in metrics.csv)");
    const std::size_t cols = n_panels == 1 ? 1 : (n_panels <= 4 ? 2 : 3);
    const std::size_t nrows = (n_panels + cols - 1) / cols;
    bool all_positive = true;
    double lo = INFINITY, hi = 0;
    for (auto& [k, layers] : panels)
      for (auto& [l, pts] : layers)
        for (auto& [s, v] : pts)
          if (std::isfinite(v)) {
            all_positive = all_positive && v > 0;
            lo = std::min(lo, v);
            hi = std::max(hi, v);
          }
    const bool logy = metric == "condition_number" && all_positive && hi > 0 && lo > 0 && hi / lo > 100;
    gp << "# pico analyze: " << metric << " against step, one line per layer.\n"
       << "set terminal pngcairo noenhanced size " << 620 * cols << "," << 420 * nrows << " font 'sans,9'\n"
       << "set output " << gp_quote(fs::path(base + ".png").filename().string()) << "\n"
       << "set datafile missing 'nan'\n"
       << "set grid\nset key outside right top box\nset xlabel 'step'\nset ylabel " << gp_quote(metric) << "\n";
    if (logy) gp << "set logscale y\n";
    gp << "set multiplot layout " << nrows << "," << cols << " title " << gp_quote(metric) << "\n";
    std::size_t index = 0, panel = 0;
    for (auto& [k, layers] : panels) {
      if (panel++ >= kMaxPanels) break;
      std::vector<std::string> names;
      for (auto& [l, pts] : layers) names.push_back(l);
      std::sort(names.begin(), names.end(),
                [](const std::string& a, const std::string& b) { return layer_order(a) < layer_order(b); });
      gp << "set title " << gp_quote(panel_title(k)) << "\nplot ";
      for (std::size_t i = 0; i < names.size(); ++i) {
        auto pts = layers[names[i]];
        std::sort(pts.begin(), pts.end());
        dat << "# " << panel_title(k) << " " << layer_label(names[i]) << "\n";
        for (auto& [s, v] : pts) dat << s << " " << (std::isfinite(v) ? number_text(v) : "nan") << "\n";
        dat << "\n\n";
        gp << (i ? ", \\\n     " : "") << gp_quote(fs::path(base + ".dat").filename().string()) << " index " << index++
           << " using 1:2 with linespoints pt 7 ps 0.6 title " << gp_quote(layer_label(names[i]));
      }
      gp << "\n";
    }
    gp << "unset multiplot\n";
    try {
      files.push_back(draw_png(dir, metric, dat.str(), gp.str()));
    } catch (const Error& e) {
      throw Error(e.what(), e.hint() + ", or pass --no-plots");
    }
  }
  return files;
}

std::string format_summary(const AnalysisResult& result, std::size_t max_lines) {
  struct Line {
    SeriesKey key;
    std::string layer;
    std::vector<std::pair<std::int64_t, double>> pts;
  };
  std::vector<Line> lines;
  std::map<std::pair<SeriesKey, std::string>, std::size_t> at;
  for (const auto& r : result.rows) {
    if (!r.head.empty()) continue;
    const SeriesKey k{r.metric, r.component, r.data_type, r.data_split, r.contributor};
    auto [it, fresh] = at.emplace(std::make_pair(k, r.layer), lines.size());
    if (fresh) lines.push_back({k, r.layer, {}});
    lines[it->second].pts.emplace_back(r.step, r.value);
  }
  bool any_split = false, any_contrib = false;
  for (const auto& l : lines) {
    any_split = any_split || !l.key.data_split.empty();
    any_contrib = any_contrib || !l.key.contributor.empty();
  }
  std::vector<std::vector<std::string>> table;
  std::vector<std::string> header = {"metric", "component", "data"};
  if (any_split) header.push_back("split");
  if (any_contrib) header.push_back("contrib");
  for (const char* h : {"layer", "first", "last", "min", "max"}) header.emplace_back(h);
  table.push_back(header);
  for (auto& l : lines) {
    std::sort(l.pts.begin(), l.pts.end());
    double mn = INFINITY, mx = -INFINITY;
    bool finite = false;
    for (auto& [s, v] : l.pts)
      if (std::isfinite(v)) {
        mn = std::min(mn, v);
        mx = std::max(mx, v);
        finite = true;
      }
    std::vector<std::string> row = {l.key.metric, l.key.component, l.key.data_type};
    if (any_split) row.push_back(l.key.data_split.empty() ? "-" : l.key.data_split);
    if (any_contrib) row.push_back(l.key.contributor.empty() ? "-" : l.key.contributor);
    row.push_back(l.layer);
    row.push_back(str(short_number(l.pts.front().second), " @", l.pts.front().first));
    row.push_back(str(short_number(l.pts.back().second), " @", l.pts.back().first));
    row.push_back(finite ? short_number(mn) : "-");
    row.push_back(finite ? short_number(mx) : "-");
    table.push_back(std::move(row));
  }
  std::vector<std::size_t> width(header.size(), 0);
  for (const auto& r : table)
    for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  std::ostringstream os;
  const std::size_t shown = max_lines == 0 ? table.size() : std::min(table.size(), max_lines + 1);
  for (std::size_t j = 0; j < shown; ++j) {
    for (std::size_t i = 0; i < table[j].size(); ++i) {
      const bool numeric = i + 4 >= table[j].size();  // first, last, min, max
      if (numeric)
        os << std::setw(static_cast<int>(width[i])) << std::right << table[j][i];
      else
        os << std::setw(static_cast<int>(width[i])) << std::left << table[j][i];
      os << (i + 1 < table[j].size() ? "  " : "");
    }
    os << "\n";
    if (j == 0) {
      std::size_t total = 0;
      for (auto w : width) total += w + 2;
      os << std::string(total - 2, '-') << "\n";
    }
  }
  if (shown < table.size()) os << "… " << table.size() - shown << " more lines\n";
  return os.str();
}

std::string format_profile(const Profile& p) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  double metrics = 0;
  for (const auto& [m, s] : p.metric_seconds) metrics += s;
  os << "total " << p.total_seconds << " s; read " << p.read_seconds << " s on the loader thread (" << p.files_read
     << " files, " << format_bytes(static_cast<double>(p.bytes_read)) << "), of which " << p.read_wait_seconds
     << " s not hidden behind analysis; components " << p.component_seconds << " s; SVD " << p.svd_seconds
     << " s; metrics " << metrics << " s";
  if (!p.metric_seconds.empty()) {
    std::vector<std::string> parts;
    for (const auto& [m, s] : p.metric_seconds) {
      std::ostringstream one;
      one << std::fixed << std::setprecision(2) << m << " " << s;
      parts.push_back(one.str());
    }
    os << " (" << join(parts, ", ") << ")";
  }
  if (p.decentralized_seconds > 0) os << "; decentralized " << p.decentralized_seconds << " s";
  return os.str();
}

std::vector<std::string> write_report(const std::string& dir, const AnalysisResult& result, const AnalysisConfig& cfg,
                                      bool plots) {
  make_dirs(dir);
  std::vector<std::string> files;
  write_csv(dir + "/metrics.csv", result.rows);
  files.push_back(dir + "/metrics.csv");
  write_json(dir + "/metrics.json", result, cfg);
  files.push_back(dir + "/metrics.json");
  write_file_atomic(dir + "/summary.txt", format_summary(result));
  files.push_back(dir + "/summary.txt");
  if (plots) {
    auto pngs = write_plots(dir + "/plots", result.rows);
    files.insert(files.end(), pngs.begin(), pngs.end());
  }
  return files;
}

}  // namespace pico::analysis
