#include "core/cli11.h"
#include "core/file.h"
#include "keygen/keygen.h"
#include "verbs.h"

namespace mesh::keygen {

int cmd_pubkey(Context& ctx, int argc, char** argv) {
  CLI::App app("Read a private key on stdin and print its public key");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto text = read_stream(ctx.in, 4096);
  if (!text) return report(ctx, text.status());
  auto pub = public_from_text(*text);
  wipe(*text);
  if (!pub) return report(ctx, pub.status());
  ctx.out << pub->to_base64() << "\n" << std::flush;
  return 0;
}

}  // namespace mesh::keygen
