#include <nlohmann/json.hpp>

#include "core/cli11.h"
#include "core/json.h"
#include "keygen/keygen.h"
#include "verbs.h"

namespace mesh::keygen {

int cmd_pair(Context& ctx, int argc, char** argv) {
  CLI::App app("Generate a key pair");
  bool json = false;
  SecretSink sink;
  app.add_flag("--json", json, "print one JSON document");
  app.add_option("-o,--output", sink.path,
                 "write the private key to FILE (mode 0600); print only the public key");
  app.add_flag("-f,--force", sink.force, "replace FILE if it exists");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;

  SecretKey k = SecretKey::generate_private();
  std::string pub = k.public_key().to_base64();
  if (!sink.path.empty() && sink.path != "-") {
    if (Status s = emit_secret(ctx, sink, k.to_base64() + "\n"); !s) return report(ctx, s);
    if (json)
      ctx.out << dump_json(Json{{"private_key_file", sink.path}, {"public_key", pub}}) << "\n";
    else
      ctx.out << pub << "\n";
    return ctx.out.flush() ? 0 : report(ctx, io_error("cannot write to standard output"));
  }
  std::string priv = k.to_base64();
  std::string text = json ? dump_json(Json{{"private_key", priv}, {"public_key", pub}}) + "\n"
                          : "private_key: " + priv + "\npublic_key: " + pub + "\n";
  wipe(priv);
  return report(ctx, emit_secret(ctx, sink, std::move(text)));
}

}  // namespace mesh::keygen
