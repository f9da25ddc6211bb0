#include "keygen/keygen.h"

#include <ostream>

#include "core/file.h"

namespace mesh::keygen {

Status emit_secret(Context& ctx, const SecretSink& sink, std::string line) {
  if (!sink.path.empty() && sink.path != "-") {
    Status s = write_file_atomic(sink.path, line, 0600, sink.force ? Overwrite::Yes : Overwrite::No);
    wipe(line);
    return s;
  }
  if (ctx.stdout_fd_world_readable_file)
    ctx.log.warn("writing a secret to a file that group or others can read (use -o FILE)");
  ctx.out << line << std::flush;
  wipe(line);
  if (!ctx.out) return io_error("cannot write to standard output");
  return Status::ok();
}

Result<PublicKey> public_from_text(std::string_view text) {
  if (trim_key_text(text).empty()) return data_error("no private key on standard input");
  auto k = SecretKey::from_base64(text);
  if (!k) return k.status().with_context("private key");
  return k->public_key();
}

Result<std::string> make_token(int bytes) {
  if (bytes < 16 || bytes > 1024) return usage_error("--bytes must be between 16 and 1024");
  return random_token(static_cast<size_t>(bytes));
}

}  // namespace mesh::keygen
