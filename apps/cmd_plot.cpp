// pico plot — loss curves without a notebook: PNGs of a run's metrics.jsonl (gnuplot).
//
//   loss.png          train loss (per contributor) and validation loss against tokens
//   lr.png            the inner learning rate against step
//   tokens_per_s.png  throughput against step, per contributor
//   bytes_sent.png    bytes sent (cumulative) against step, per contributor
//
// Each PNG comes with its .dat and .gp (re-run by hand: `cd DIR && gnuplot loss.gp`).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "commands.h"
#include "pico/analysis/gnuplot.h"
#include "pico/common/error.h"
#include "pico/common/strings.h"

namespace pico::apps {
namespace {

namespace fs = std::filesystem;

struct PlotArgs {
  std::string run;
  std::string output;
  bool overwrite = false;
};

constexpr const char* kPlots[] = {"loss", "lr", "tokens_per_s", "bytes_sent"};

// One step record of metrics.jsonl (trainer.cpp writes them every log_every_n_steps).
struct Point {
  std::int64_t step = 0, tokens = 0;
  double loss = NAN, val_loss = NAN, lr = NAN, tok_per_s = NAN, bytes_sent = NAN;
};

double number_or_nan(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : NAN;
}

// contributor → its step records, in file order. Lines that are not JSON objects with a step
// (round records, a line cut short by a crash) are skipped and counted.
std::map<std::int64_t, std::vector<Point>> read_metrics(const std::string& path, std::size_t& skipped) {
  std::ifstream in(path);
  if (!in) throw Error(str("cannot read ", path), "pico plot takes a run directory (runs/NAME) or its metrics.jsonl");
  std::map<std::int64_t, std::vector<Point>> by_contributor;
  skipped = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      ++skipped;
      continue;
    }
    const auto step = j.find("step");
    if (step == j.end() || !step->is_number_integer() || !j.contains("loss")) continue;  // a round record
    Point p;
    p.step = step->get<std::int64_t>();
    p.tokens = static_cast<std::int64_t>(number_or_nan(j, "tokens"));
    p.loss = number_or_nan(j, "loss");
    p.val_loss = number_or_nan(j, "val_loss");
    p.lr = number_or_nan(j, "lr");
    p.tok_per_s = number_or_nan(j, "tok_per_s");
    p.bytes_sent = number_or_nan(j, "bytes_sent");
    const auto c = j.find("contributor");
    by_contributor[c != j.end() && c->is_number_integer() ? c->get<std::int64_t>() : 0].push_back(p);
  }
  return by_contributor;
}

struct Series {
  std::string title;
  std::vector<std::pair<double, double>> points;
  std::string style = "lines lw 2";
};

std::string number_text(double v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

std::string draw(const std::string& dir, const std::string& base, const std::string& title, const std::string& xlabel,
                 const std::string& ylabel, const std::vector<Series>& series) {
  std::ostringstream dat, gp;
  gp << "# pico plot: " << title << "\n"
     << "set terminal pngcairo noenhanced size 900,560 font 'sans,10'\n"
     << "set output " << analysis::gp_quote(base + ".png") << "\n"
     << "set grid\nset key top right box\nset title " << analysis::gp_quote(title) << "\n"
     << "set xlabel " << analysis::gp_quote(xlabel) << "\nset ylabel " << analysis::gp_quote(ylabel) << "\nplot ";
  std::size_t index = 0;
  for (const auto& s : series) {
    if (s.points.empty()) continue;
    dat << "# " << s.title << "\n";
    for (const auto& [x, y] : s.points) dat << number_text(x) << " " << number_text(y) << "\n";
    dat << "\n\n";
    gp << (index ? ", \\\n     " : "") << analysis::gp_quote(base + ".dat") << " index " << index << " using 1:2 with "
       << s.style << " title " << analysis::gp_quote(s.title);
    ++index;
  }
  if (index == 0) return "";
  gp << "\n";
  return analysis::draw_png(dir, base, dat.str(), gp.str());
}

void run_plot(const PlotArgs& a) {
  const bool is_dir = fs::is_directory(a.run);
  const std::string metrics = is_dir ? a.run + "/metrics.jsonl" : a.run;
  if (!fs::exists(metrics))
    throw Error(str(metrics, " does not exist"),
                is_dir ? "is this a run directory? pico train writes runs/NAME/metrics.jsonl"
                       : "pico plot takes a run directory (runs/NAME) or its metrics.jsonl");
  const std::string run_dir = fs::path(metrics).parent_path().string();
  const std::string out = a.output.empty() ? (run_dir.empty() ? "." : run_dir) + "/plots" : a.output;
  if (!a.overwrite)
    for (const char* name : kPlots)
      if (fs::exists(out + "/" + name + ".png"))
        throw Error(str("plots already exist in ", out, " (", name, ".png)"),
                    "pass --overwrite to replace them, or --output DIR for another directory");
  analysis::require_gnuplot();
  std::size_t skipped = 0;
  const auto data = read_metrics(metrics, skipped);
  if (data.empty())
    throw Error(str(metrics, " holds no step records yet"),
                "a run writes one every monitoring.logging.log_every_n_steps steps; plot it after the first");
  if (skipped > 0) std::cerr << "pico plot: skipped " << skipped << " lines of " << metrics << " that are not JSON\n";

  const bool many = data.size() > 1;
  auto who = [&](std::int64_t c) { return many ? str(" (contributor ", c, ")") : std::string(); };
  std::vector<Series> loss, lr, tps, bytes;
  for (const auto& [c, points] : data) {
    Series train{"train loss" + who(c), {}}, val{"validation loss" + who(c), {}, "linespoints lw 2 pt 7 ps 0.8"};
    Series l{"lr" + who(c), {}}, t{"tokens/s" + who(c), {}}, b{"MB sent" + who(c), {}};
    for (const auto& p : points) {
      if (std::isfinite(p.loss)) train.points.emplace_back(static_cast<double>(p.tokens), p.loss);
      if (std::isfinite(p.val_loss)) val.points.emplace_back(static_cast<double>(p.tokens), p.val_loss);
      if (std::isfinite(p.lr)) l.points.emplace_back(static_cast<double>(p.step), p.lr);
      if (std::isfinite(p.tok_per_s)) t.points.emplace_back(static_cast<double>(p.step), p.tok_per_s);
      if (std::isfinite(p.bytes_sent)) b.points.emplace_back(static_cast<double>(p.step), p.bytes_sent / 1e6);
    }
    loss.push_back(std::move(train));
    loss.push_back(std::move(val));
    if (c == data.begin()->first) lr.push_back(std::move(l));  // one schedule for all contributors
    tps.push_back(std::move(t));
    bytes.push_back(std::move(b));
  }
  const std::string tokens_label = many ? "tokens (each contributor's)" : "tokens";
  std::vector<std::string> files;
  for (auto f : {draw(out, "loss", "loss — " + metrics, tokens_label, "loss", loss),
                 draw(out, "lr", "learning rate — " + metrics, "step", "lr", lr),
                 draw(out, "tokens_per_s", "throughput — " + metrics, "step", "tokens/s", tps),
                 draw(out, "bytes_sent", "bytes sent — " + metrics, "step", "MB sent (cumulative)", bytes)})
    if (!f.empty()) files.push_back(f);
  std::size_t steps = 0;
  for (const auto& [c, points] : data) steps += points.size();
  std::cout << "plotted " << steps << " step records of " << data.size() << " contributor" << (many ? "s" : "")
            << " from " << metrics << ":\n";
  for (const auto& f : files) std::cout << "  " << f << "\n";
}

void register_plot(CLI::App& app) {
  auto a = std::make_shared<PlotArgs>();
  auto* sub = app.add_subcommand(
      "plot", "Draw a run's loss, validation loss, learning rate, tokens/s and bytes sent as PNGs (gnuplot).");
  sub->add_option("run", a->run, "A run directory (e.g. runs/demo) or its metrics.jsonl")->required();
  sub->add_option("--output", a->output, "Where the PNGs go (default: RUN/plots)");
  sub->add_flag("--overwrite", a->overwrite, "Replace plots already in the output directory");
  sub->callback([a] { run_plot(*a); });
}

}  // namespace

PICO_COMMAND(85, register_plot);

}  // namespace pico::apps
