#include "apply/apply.h"

#include "core/cli11.h"
#include "verbs.h"

namespace mesh::apply {

int cmd_down(Context& ctx, int argc, char** argv) {
  CLI::App app("Remove interface IF, its wireguard-go daemon, its firewall table and its hosts block");
  std::string interface, backend = "auto", hosts_file = "/etc/hosts";
  app.add_option("-i,--interface", interface, "WireGuard interface to remove")->required();
  app.add_option("--backend", backend, "auto, kernel or userspace")
      ->check(CLI::IsMember({"auto", "kernel", "userspace"}));
  app.add_option("--hosts-file", hosts_file, "hosts file to remove IF's block from ('none': leave it alone)")
      ->capture_default_str();
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (hosts_file == "none") hosts_file.clear();
  else if (hosts_file.empty()) return report(ctx, usage_error("--hosts-file: expected a file or 'none'"));
  auto r = run_down(interface, backend, hosts_file, backend_env(ctx), ctx.log);
  if (!r) return report(ctx, r.status());
  ctx.out << *r << std::flush;
  return ctx.out ? 0 : report(ctx, io_error("cannot write to standard output"));
}

}  // namespace mesh::apply
