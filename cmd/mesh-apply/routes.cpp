#include "apply/apply.h"
#include "apply/routing.h"
#include "core/cli11.h"
#include "verbs.h"

namespace mesh::apply {

int cmd_routes(Context& ctx, int argc, char** argv) {
  CLI::App app("Show the routers of IF's routed networks, or watch them and fail over (mesh-apply(8))");
  WatchOptions o;
  bool watch = false;
  app.add_option("-i,--interface", o.interface, "WireGuard interface")->required();
  app.add_option("--backend", o.backend, "auto, kernel or userspace")
      ->check(CLI::IsMember({"auto", "kernel", "userspace"}));
  app.add_flag("--watch", watch, "keep watching the routers and move networks when one dies or returns");
  app.add_option("--interval", o.interval_ms, "milliseconds between samples (default 250)")
      ->check(CLI::Range(20, 10000));
  app.add_option("--dead-after", o.timing.dead_after_ms,
                 "milliseconds without traffic from a router before it counts as dead (default 2000)")
      ->check(CLI::Range(100, 600000));
  app.add_option("--hold-down", o.timing.hold_down_ms,
                 "milliseconds a better router must stay alive before networks move back (default 3000)")
      ->check(CLI::Range(0, 3600000));
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (Status s = check_interface_name(o.interface); !s) return report(ctx, s);
  BackendEnv env = backend_env(ctx);
  if (!watch) {
    auto r = run_routes_show(o.interface, o.backend, env);
    if (!r) return report(ctx, r.status());
    ctx.out << *r << std::flush;
    return ctx.out ? 0 : report(ctx, io_error("cannot write to standard output"));
  }
  if (!have_net_admin()) return report(ctx, no_permission("watching " + o.interface + "'s routes needs root (CAP_NET_ADMIN)"));
  Status s = run_routes_watch(o, env, ctx.out, ctx.log);
  return s ? 0 : report(ctx, s);
}

}  // namespace mesh::apply
