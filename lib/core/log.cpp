#include "core/log.h"

#include <unistd.h>

#include <string>

namespace mesh {

bool is_tty(int fd) { return ::isatty(fd) == 1; }

bool use_color(int fd, const char* no_color_env) {
  if (no_color_env && *no_color_env) return false;
  return is_tty(fd);
}

void Log::write(LogLevel l, std::string_view msg) const {
  if (static_cast<int>(l) > static_cast<int>(level_)) return;
  static constexpr const char* kNames[] = {"error", "warning", "info", "debug"};
  static constexpr const char* kColors[] = {"\033[1;31m", "\033[1;33m", "\033[1;36m", "\033[2m"};
  int i = static_cast<int>(l);
  std::string line = program_ + ": ";
  if (color_) line += kColors[i];
  line += kNames[i];
  if (color_) line += "\033[0m";
  line += ": ";
  // One line per message: a newline inside would break line-oriented readers.
  for (char c : msg) line += (c == '\n' ? ' ' : c);
  line += '\n';
  *out_ << line << std::flush;
}

}  // namespace mesh
