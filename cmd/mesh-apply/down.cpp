#include "apply/apply.h"

#include "core/cli11.h"
#include "verbs.h"

namespace mesh::apply {

int cmd_down(Context& ctx, int argc, char** argv) {
  CLI::App app("Remove interface IF, its wireguard-go daemon and its firewall table");
  std::string interface, backend = "auto";
  app.add_option("-i,--interface", interface, "WireGuard interface to remove")->required();
  app.add_option("--backend", backend, "auto, kernel or userspace")
      ->check(CLI::IsMember({"auto", "kernel", "userspace"}));
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto r = run_down(interface, backend, backend_env(ctx), ctx.log);
  if (!r) return report(ctx, r.status());
  ctx.out << *r << std::flush;
  return ctx.out ? 0 : report(ctx, io_error("cannot write to standard output"));
}

}  // namespace mesh::apply
