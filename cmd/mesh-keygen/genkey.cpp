#include "core/cli11.h"
#include "keygen/keygen.h"
#include "verbs.h"

namespace mesh::keygen {

// genkey and genpsk differ only in clamping.
static int generate(Context& ctx, int argc, char** argv, bool private_key) {
  CLI::App app(private_key ? "Generate a private key" : "Generate a preshared key");
  SecretSink sink;
  app.add_option("-o,--output", sink.path, "write the key to FILE (mode 0600) instead of stdout");
  app.add_flag("-f,--force", sink.force, "replace FILE if it exists");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  SecretKey k = private_key ? SecretKey::generate_private() : SecretKey::generate_preshared();
  return report(ctx, emit_secret(ctx, sink, k.to_base64() + "\n"));
}

int cmd_genkey(Context& ctx, int argc, char** argv) { return generate(ctx, argc, argv, true); }
int cmd_genpsk(Context& ctx, int argc, char** argv) { return generate(ctx, argc, argv, false); }

}  // namespace mesh::keygen
