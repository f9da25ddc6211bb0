#include "apply/apply.h"

#include <cstdlib>

#include "core/cli11.h"
#include "verbs.h"

namespace mesh::apply {

BackendEnv backend_env(const Context& ctx) {
  BackendEnv env;
  if (const char* impl = ctx.env("WG_USERSPACE_IMPLEMENTATION"); impl && *impl)
    env.userspace_impl = impl;
  if (const char* dir = ctx.env("MESH_APPLY_STATE_DIR"); dir && *dir) env.state_dir = dir;
  if (const char* v = ctx.env("MESH_APPLY_VERIFY_INTERVAL"); v && *v) {
    char* end = nullptr;
    long long s = std::strtoll(v, &end, 10);
    if (end && *end == '\0' && s >= 0) env.verify_interval = s;  // else: the default
  }
  return env;
}

int cmd_apply(Context& ctx, int argc, char** argv) {
  CLI::App app("Make WireGuard interface IF match a network map (mesh-apply(8))");
  ApplyOptions o;
  int listen_port = -1;
  app.add_option("-i,--interface", o.interface, "WireGuard interface to configure")->required();
  app.add_option("-k,--key", o.key_file, "this node's private key file")->required();
  app.add_option("--listen-port", listen_port, "UDP listen port (overrides the map's)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--endpoints", o.endpoints_files,
                 "endpoints document (mesh-punch/mesh-relay); repeatable, later ones win")
      ->allow_extra_args(false);  // one FILE per --endpoints; the map stays positional
  app.add_option("--backend", o.backend, "auto, kernel or userspace")
      ->check(CLI::IsMember({"auto", "kernel", "userspace"}));
  app.add_flag("--strict", o.strict, "unknown fields in the map are errors");
  app.add_flag("-n,--dry-run", o.dry_run, "print the plan as JSON and change nothing");
  app.add_flag("--print-conf", o.print_conf,
               "print an equivalent wg-quick configuration and change nothing");
  app.add_flag("--verify", o.verify,
               "read the whole device back even when the memo vouches for it");
  app.add_option("--socket-buffer", o.socket_buffer,
                 "userspace daemon's UDP socket buffers, bytes each way (0: leave them)")
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("--hosts-file", o.hosts_file,
                 "hosts file whose marked block lists the peers' DNS names ('none': leave it alone)")
      ->capture_default_str();
  std::string exit_node = "none";
  std::vector<std::string> bypass;
  app.add_option("--exit-node", exit_node,
                 "send all traffic through this peer's default routes ('none': no exit node)")
      ->capture_default_str();
  app.add_flag("--exit-node-block-lan", o.exit_block_lan,
               "with --exit-node, local networks go through the exit node too");
  app.add_option("--exit-node-bypass", bypass,
                 "with --exit-node, a prefix (the coordinator) that keeps the real uplink; repeatable")
      ->allow_extra_args(false);
  app.add_option("map", o.map_file, "network map file, '-' for stdin (default)");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (o.hosts_file == "none") o.hosts_file.clear();
  else if (o.hosts_file.empty()) return report(ctx, usage_error("--hosts-file: expected a file or 'none'"));
  if (exit_node.empty()) return report(ctx, usage_error("--exit-node: expected a peer name or 'none'"));
  if (exit_node != "none") o.exit_node = exit_node;
  for (const auto& b : bypass) {
    auto p = Prefix::parse(b.find('/') == std::string::npos ? b + (b.find(':') == std::string::npos ? "/32" : "/128") : b);
    if (!p) return report(ctx, usage_error("--exit-node-bypass: " + p.status().message()));
    o.exit_bypass.push_back(p->canonical());
  }
  if (o.exit_node.empty() && (o.exit_block_lan || !o.exit_bypass.empty()))
    return report(ctx, usage_error("--exit-node-block-lan and --exit-node-bypass need --exit-node NAME"));
  if (listen_port >= 0) o.listen_port = static_cast<uint16_t>(listen_port);
  if (o.dry_run && o.print_conf)
    return report(ctx, usage_error("--dry-run and --print-conf are exclusive"));
  auto r = run_apply(o, backend_env(ctx), ctx.log);
  if (!r) return report(ctx, r.status());
  ctx.out << *r << std::flush;
  wipe(*r);
  return ctx.out ? 0 : report(ctx, io_error("cannot write to standard output"));
}

}  // namespace mesh::apply
