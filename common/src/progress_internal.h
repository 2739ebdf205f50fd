// Shared between log.cpp and progress.cpp: one mutex for the terminal and the live line.
#pragma once

#include <mutex>

namespace pico::detail {
std::mutex& terminal_mutex();
void clear_progress_line_locked();
void redraw_progress_line_locked();
}  // namespace pico::detail
