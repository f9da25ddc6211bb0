#include <ctime>
#include <nlohmann/json.hpp>

#include "core/cli11.h"
#include "core/json.h"
#include "punch/discover.h"
#include "verbs.h"

namespace mesh::punch {

namespace {

struct StunOptions {
  std::vector<std::string> servers;
  int port = 0;
  double timeout = 3;
  bool json = false;
  std::string socket = "auto";
  bool no_nat_tests = false;
};

void print_human(std::ostream& os, const EndpointsDoc& d, const std::string& mode) {
  os << "socket:     " << mode << "\n";
  for (const auto& r : d.stun)
    os << "server:     " << r.server << " -> "
       << (r.mapped ? r.mapped->to_string() : "(" + r.error + ")") << "\n";
  for (const auto& c : d.candidates)
    os << "candidate:  " << c.endpoint.to_string() << " " << c.kind << "\n";
  os << "mapping:    " << d.nat->mapping << "\nfiltering:  " << d.nat->filtering << "\n";
}

}  // namespace

int cmd_stun(Context& ctx, int argc, char** argv) {
  CLI::App app("Discover this node's candidates and NAT behaviour with STUN, from port P");
  StunOptions o;
  app.add_option("--server", o.servers, "STUN server HOST:PORT (repeatable)")->required();
  app.add_option("--port", o.port, "local UDP port (the WireGuard listen port)")
      ->required()->check(CLI::Range(1, 65535));
  app.add_option("--timeout", o.timeout, "give up after SECONDS (default 3)")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_flag("--json", o.json, "print the endpoints document (default unless stdout is a tty)");
  app.add_option("--socket", o.socket, "auto (default), socket or raw")
      ->check(CLI::IsMember({"auto", "socket", "raw"}));
  app.add_flag("--no-nat-tests", o.no_nat_tests,
               "only find candidates: skip the RFC 5780 mapping and filtering tests (fast)");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;

  DiscoverOptions opt;
  opt.nat_tests = !o.no_nat_tests;
  for (const auto& s : o.servers) {
    auto a = resolve_hostport(s);
    if (!a) return report(ctx, a.status().with_context("--server"));
    opt.servers.push_back(s);
    opt.addresses.push_back(*a);
  }
  opt.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout * 1000));
  opt.local_addresses = local_addresses();
  auto mode = parse_socket_mode(o.socket);
  if (!mode) return report(ctx, mode.status());
  auto t = open_transport(static_cast<uint16_t>(o.port), *mode);
  if (!t) return report(ctx, t.status());
  ctx.log.info("using a " + (*t)->mode() + " socket on port " + std::to_string(o.port));
  auto ft = open_ephemeral();
  if (!ft) return report(ctx, ft.status());
  opt.filter_transport = ft->get();
  auto d = discover(**t, opt);
  if (!d) return report(ctx, d.status());

  EndpointsDoc doc;
  doc.generated_at = static_cast<int64_t>(std::time(nullptr));
  for (const auto& ip : opt.local_addresses)
    doc.candidates.push_back(Candidate{SockAddr{ip, static_cast<uint16_t>(o.port)}, "host"});
  for (const auto& c : d->srflx) doc.candidates.push_back(c);
  doc.nat = d->nat;
  doc.stun = d->servers;
  if (o.json || !ctx.stdout_tty) ctx.out << dump_json(endpoints_to_json(doc), true) << "\n";
  else print_human(ctx.out, doc, (*t)->mode());
  ctx.out.flush();
  if (!ctx.out) return report(ctx, io_error("cannot write to standard output"));
  return 0;
}

}  // namespace mesh::punch
