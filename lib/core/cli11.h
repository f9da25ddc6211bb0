// CLI11 glue for verb files (cmd/ only: CLI11 is a heavy header, keep it out
// of lib/ headers). Parse errors become Exit::Usage with a one-line message.
#pragma once

#include <CLI/CLI.hpp>
#include <ostream>

#include "core/cli.h"

namespace mesh {

// Parses argv into `app`. Returns -1 to continue, or the exit code to return
// now (0 after printing --help to stdout, Exit::Usage after an error).
inline int parse_args(CLI::App& app, Context& ctx, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::CallForHelp&) {
    ctx.out << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    ctx.out << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::ParseError& e) {
    ctx.log.error(e.what());
    return to_int(Exit::Usage);
  }
}

}  // namespace mesh
