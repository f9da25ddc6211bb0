#include "apply/apply.h"

#include "core/cli11.h"
#include "verbs.h"

namespace mesh::apply {

int cmd_tune(Context& ctx, int argc, char** argv) {
  CLI::App app("Size the UDP socket buffers of the userspace daemon serving IF (mesh-apply(8))");
  std::string interface, backend = "auto";
  int bytes = kDaemonSocketBuffer;
  app.add_option("-i,--interface", interface, "WireGuard interface")->required();
  app.add_option("--backend", backend, "auto, kernel or userspace")
      ->check(CLI::IsMember({"auto", "kernel", "userspace"}));
  app.add_option("--socket-buffer", bytes, "bytes each way per socket (default 7 MiB)")
      ->check(CLI::Range(1, 1 << 30));
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto r = run_tune(interface, backend, bytes, backend_env(ctx));
  if (!r) return report(ctx, r.status());
  ctx.out << *r << std::flush;
  return ctx.out ? 0 : report(ctx, io_error("cannot write to standard output"));
}

}  // namespace mesh::apply
