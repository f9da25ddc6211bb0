#include "core/cli.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "core/file.h"

namespace mesh {

int report(Context& ctx, const Status& s) {
  if (s.is_ok()) return 0;
  ctx.log.error(s.message());
  return to_int(s.code());
}

static void print_usage(std::ostream& os, std::string_view program, std::span<const Verb> verbs) {
  os << "usage: " << program << " <command> [options]\n\ncommands:\n";
  for (const auto& v : verbs) {
    std::string name = v.name.empty() ? "(default)" : std::string(v.name);
    os << "  " << name;
    for (size_t i = name.size(); i < 12; ++i) os << ' ';
    os << "  " << v.description << "\n";
  }
  os << "\nRun '" << program << " <command> --help' for a command's options and 'man " << program
     << "' for the manual.\n";
}

int run_program(std::string_view program, std::span<const Verb> verbs, int argc, char** argv) {
  std::ios::sync_with_stdio(true);
  Log log(std::string(program), std::cerr, use_color(STDERR_FILENO, std::getenv("NO_COLOR")));
  Context ctx{std::cin, std::cout, std::cerr, log, is_tty(STDOUT_FILENO),
              fd_is_world_readable_file(STDOUT_FILENO),
              [](const char* k) -> const char* { return std::getenv(k); }, STDOUT_FILENO};
  if (const char* lv = std::getenv("MESH_LOG")) {
    std::string l = lv;
    if (l == "debug") log.set_level(LogLevel::Debug);
    else if (l == "info") log.set_level(LogLevel::Info);
    else if (l == "error") log.set_level(LogLevel::Error);
  }

  const Verb* def = nullptr;
  for (const auto& v : verbs)
    if (v.name.empty()) def = &v;

  std::string first = argc > 1 ? argv[1] : "";
  if (first == "--version" || first == "version") {
    std::cout << program << " " << MESH_VERSION << "\n";
    return 0;
  }
  for (const auto& v : verbs) {
    if (!v.name.empty() && first == v.name) {
      std::string name = std::string(program) + " " + std::string(v.name);
      std::vector<char*> args(argv + 1, argv + argc);
      args[0] = name.data();
      return v.fn(ctx, static_cast<int>(args.size()), args.data());
    }
  }
  if (def && !(first == "help")) {
    // The default verb also owns --help when there is one.
    return def->fn(ctx, argc, argv);
  }
  if (first.empty() || first == "--help" || first == "-h" || first == "help") {
    print_usage(first.empty() ? std::cerr : std::cout, program, verbs);
    return first.empty() ? to_int(Exit::Usage) : 0;
  }
  log.error("unknown command '" + first + "' (see '" + std::string(program) + " --help')");
  return to_int(Exit::Usage);
}

bool write_line(Context& ctx, std::string_view line) {
  if (ctx.out_fd < 0) {
    ctx.out << line << std::flush;
    return static_cast<bool>(ctx.out);
  }
  ctx.out << std::flush;
  return write_all(ctx.out_fd, line, "standard output").is_ok();
}

}  // namespace mesh
