// pico/analysis/report.h — an analysis' results as files and as a terminal table.
//
//   DIR/metrics.csv        metric,component,data_type,data_split,layer,step,value,head,contributor,round,target_step
//   DIR/metrics.json       {"analysis": {...}, "rows": [{"metric": ..., "value": ...}, ...]}
//   DIR/plots/<metric>.png value against step, one line per layer; one panel per
//                          (component, data type, split[, contributor]) — made by gnuplot
//                          (pngcairo); the .gp script and .dat data sit next to it
//   DIR/summary.txt        the summary table in full
//
// Values that are not finite are written as "nan", "inf", "-inf" in the CSV and as null in
// the JSON (with "value_text" saying which). Per-head ov_circuit rows are in the CSV and
// JSON but not in the plots or the summary (one line per layer keeps them readable).
//
// What this is not: no metric is computed here (runner.h).
#pragma once

#include <string>
#include <vector>

#include "pico/analysis/config.h"
#include "pico/analysis/runner.h"

namespace pico::analysis {

void write_csv(const std::string& path, const std::vector<Row>& rows);
void write_json(const std::string& path, const AnalysisResult& result, const AnalysisConfig& cfg);

// One PNG per metric under `dir` (created). Throws pico::Error with a HINT when gnuplot is
// missing or fails (the message carries gnuplot's own error).
std::vector<std::string> write_plots(const std::string& dir, const std::vector<Row>& rows);

// The table: per (metric, component, data type, split, contributor, layer) the value at the
// first and last analyzed step, its min and max over the steps. At most `max_lines` rows
// (0 = all); a last line says how many were left out.
std::string format_summary(const AnalysisResult& result, std::size_t max_lines = 0);
// Where the time went, one line per part.
std::string format_profile(const Profile& p);

// Writes metrics.csv, metrics.json, summary.txt and (unless !plots) the PNGs into `dir`.
// Returns the files written.
std::vector<std::string> write_report(const std::string& dir, const AnalysisResult& result, const AnalysisConfig& cfg,
                                      bool plots);

}  // namespace pico::analysis
