// pico/analysis/gnuplot.h — drawing PNGs with gnuplot (pico analyze, pico plot).
//
// pico writes each plot as three files in one directory: BASE.dat (the numbers), BASE.gp (the
// gnuplot script, readable and re-runnable by hand: `cd DIR && gnuplot BASE.gp`) and BASE.png.
#pragma once

#include <string>

namespace pico::analysis {

// A gnuplot single-quoted string: ' is written ''.
std::string gp_quote(const std::string& s);
// Throws pico::Error with an install HINT when gnuplot is not on PATH.
void require_gnuplot();
// Writes DIR/BASE.dat and DIR/BASE.gp and runs gnuplot in DIR, which must write DIR/BASE.png;
// returns that path. Throws pico::Error with gnuplot's own message when it fails.
std::string draw_png(const std::string& dir, const std::string& base, const std::string& data,
                     const std::string& script);

}  // namespace pico::analysis
