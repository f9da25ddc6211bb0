#include "core/cli11.h"
#include "keygen/keygen.h"
#include "verbs.h"

namespace mesh::keygen {

int cmd_token(Context& ctx, int argc, char** argv) {
  CLI::App app("Generate a random URL-safe token");
  int bytes = 32;
  SecretSink sink;
  app.add_option("-b,--bytes", bytes, "bytes of randomness (16-1024)")->capture_default_str();
  app.add_option("-o,--output", sink.path, "write the token to FILE (mode 0600) instead of stdout");
  app.add_flag("-f,--force", sink.force, "replace FILE if it exists");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto t = make_token(bytes);
  if (!t) return report(ctx, t.status());
  return report(ctx, emit_secret(ctx, sink, *t + "\n"));
}

}  // namespace mesh::keygen
