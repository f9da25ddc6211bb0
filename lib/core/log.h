// Diagnostics to stderr, one line each, prefixed with the program name:
//   mesh-keygen: error: invalid key: ...
// Colour only when the stream is a terminal and NO_COLOR is unset.
// A Log is passed to whoever needs it; there is no global logger.
#pragma once

#include <ostream>
#include <string>
#include <string_view>

namespace mesh {

enum class LogLevel { Error = 0, Warn = 1, Info = 2, Debug = 3 };

// True when fd is a terminal.
bool is_tty(int fd);
// True when colour should be used on fd: a tty and NO_COLOR unset or empty
// (https://no-color.org). `no_color_env` is getenv("NO_COLOR").
bool use_color(int fd, const char* no_color_env);

class Log {
 public:
  Log(std::string program, std::ostream& out, bool color = false, LogLevel level = LogLevel::Warn)
      : program_(std::move(program)), out_(&out), color_(color), level_(level) {}

  void error(std::string_view msg) const { write(LogLevel::Error, msg); }
  void warn(std::string_view msg) const { write(LogLevel::Warn, msg); }
  void info(std::string_view msg) const { write(LogLevel::Info, msg); }
  void debug(std::string_view msg) const { write(LogLevel::Debug, msg); }

  void set_level(LogLevel l) { level_ = l; }
  LogLevel level() const { return level_; }
  const std::string& program() const { return program_; }

 private:
  void write(LogLevel l, std::string_view msg) const;

  std::string program_;
  std::ostream* out_;
  bool color_;
  LogLevel level_;
};

}  // namespace mesh
