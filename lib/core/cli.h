// The shape every mesh program has: a thin main() holding a table of verbs
// {name, fn, description}, one verb per file under cmd/<program>/. Verbs get
// a Context (streams, log, environment) instead of touching globals, so
// tests can drive them with string streams.
#pragma once

#include <functional>
#include <iosfwd>
#include <span>
#include <string>
#include <string_view>

#include "core/log.h"
#include "core/status.h"

namespace mesh {

struct Context {
  std::istream& in;
  std::ostream& out;  // data only
  std::ostream& err;  // diagnostics only (through log)
  Log& log;
  bool stdout_tty = false;
  bool stdout_fd_world_readable_file = false;
  // Environment lookup (getenv by default); nullptr when unset.
  std::function<const char*(const char*)> env;
  // The descriptor behind `out` when it is the process's stdout (-1 when
  // `out` is not backed by one, e.g. a string stream in a test): for output
  // that must reach it in one write(2) (event lines shared on a pipe).
  int out_fd = -1;
};

struct Verb {
  std::string_view name;  // "" marks the default verb (run when no verb name is given)
  int (*fn)(Context& ctx, int argc, char** argv);  // argv[0] is "<program> <verb>"
  std::string_view description;
};

// Dispatches argv[1] to a verb, handling --help/-h, --version and unknown
// verbs (Exit::Usage). Builds the Context from the process's real streams.
int run_program(std::string_view program, std::span<const Verb> verbs, int argc, char** argv);

// Logs `s` as an error (when not ok) and returns its exit code.
int report(Context& ctx, const Status& s);

// Writes `line` (with its newline) to the program's standard output in one
// write(2) when `out` is backed by a descriptor: a line under PIPE_BUF then
// reaches a pipe or FIFO shared with other writers whole (event lines).
// False when it cannot be written.
bool write_line(Context& ctx, std::string_view line);

}  // namespace mesh
