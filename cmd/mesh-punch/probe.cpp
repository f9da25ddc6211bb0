#include <sys/stat.h>

#include <ctime>
#include <nlohmann/json.hpp>

#include "core/cli11.h"
#include "core/json.h"
#include "netmap/endpoints.h"
#include "netmap/netmap.h"
#include "punch/discover.h"
#include "punch/probe.h"
#include "verbs.h"

namespace mesh::punch {

namespace {

struct ProbeCliOptions {
  std::string key_file;
  int port = 0;
  double timeout = 5;
  std::string candidates_file;
  std::string map_file = "-";
  bool json = false;
  bool follow = false;
  std::string socket = "auto";
  int open_ttl = 2;
  int open_window_ms = 150;
  int linger_ms = 0;
  std::vector<std::string> only;  // --peer: probe these peers only
};

void print_human(std::ostream& os, const EndpointsDoc& d) {
  for (const auto& p : d.peers) {
    os << (p.name.empty() ? p.public_key.to_base64() : p.name) << "  " << p.status;
    if (p.endpoint) os << "  " << p.endpoint->to_string() << " " << p.kind;
    if (p.rtt_ms >= 0) os << "  " << p.rtt_ms << " ms";
    os << "\n";
  }
}

}  // namespace

int cmd_probe(Context& ctx, int argc, char** argv) {
  CLI::App app("Punch authenticated direct paths from port P to the peers of a network map");
  ProbeCliOptions o;
  app.add_option("--key", o.key_file, "this node's WireGuard private key file")->required();
  app.add_option("--port", o.port, "local UDP port (the WireGuard listen port)")
      ->required()->check(CLI::Range(1, 65535));
  app.add_option("--timeout", o.timeout, "stop after SECONDS (default 5)")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--candidates", o.candidates_file,
                 "own endpoints document (from 'mesh-punch stun') copied into the output");
  app.add_option("--socket", o.socket, "auto (default), socket or raw")
      ->check(CLI::IsMember({"auto", "socket", "raw"}));
  app.add_option("--open-ttl", o.open_ttl, "TTL of the opening packets (default 2, 0 = none)")
      ->check(CLI::Range(0, 255));
  app.add_option("--open-window", o.open_window_ms,
                 "milliseconds of opening packets before full checks (default 150)")
      ->check(CLI::Range(0, 10000));
  app.add_option("--linger", o.linger_ms,
                 "milliseconds to keep answering the peers' checks once settled (default 0)")
      ->check(CLI::Range(0, 60000));
  app.add_option("--peer", o.only,
                 "probe only this peer (public key or name; repeatable; default: every peer)")
      ->allow_extra_args(false);
  app.add_flag("--follow", o.follow,
               "re-read MAP_FILE when it changes and check the new candidates of its peers");
  app.add_flag("--json", o.json, "print the endpoints document (default unless stdout is a tty)");
  app.add_option("map", o.map_file, "network map file, '-' for stdin (default)");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (o.follow && o.map_file == "-")
    return report(ctx, usage_error("--follow needs a map file, not standard input"));

  std::string warning;
  auto key = read_private_key_file(o.key_file, &warning);
  if (!key) return report(ctx, key.status().with_context(o.key_file));
  if (!warning.empty()) ctx.log.warn(warning);
  auto map = read_netmap_file(o.map_file);
  if (!map) return report(ctx, map.status());
  PublicKey own = key->public_key();
  if (!map->self.public_key.is_zero() && map->self.public_key != own)
    return report(ctx, data_error("the key in " + o.key_file +
                                  " does not match self.public_key of the map"));
  EndpointsDoc doc;
  if (!o.candidates_file.empty()) {
    auto c = read_endpoints_file(o.candidates_file);
    if (!c) return report(ctx, c.status());
    doc.candidates = c->candidates;
    doc.nat = c->nat;
  }

  // --peer: a peer the map does not (or no longer) list is left out; the
  // output then says nothing about it.
  auto wanted = [&](const MapPeer& p) {
    if (o.only.empty()) return true;
    for (const auto& w : o.only)
      if (w == p.public_key.to_base64() || w == p.name) return true;
    return false;
  };
  ProbeOptions opt;
  for (const auto& p : map->peers)
    if (wanted(p)) opt.peers.push_back(ProbePeer{p.public_key, p.name, p.endpoints});
  opt.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout * 1000));
  opt.open_ttl = o.open_ttl;
  opt.open_window = std::chrono::milliseconds(o.open_window_ms);
  opt.linger = std::chrono::milliseconds(o.linger_ms);
  opt.behind_nat = !(doc.nat && doc.nat->mapping == "none");
  opt.local_subnets = local_subnets();
  // --follow: mesh-coord watch --cache replaces the file (rename), so a
  // changed inode, size or mtime means a new map. A map that does not parse
  // or is for another node is skipped (the next one may be fine).
  auto file_id = [](const std::string& path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) return std::string();
    return std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
           std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
  };
  std::string seen = o.follow ? file_id(o.map_file) : std::string();
  if (o.follow) {
    opt.refresh = [&]() -> std::vector<ProbePeer> {
      std::string id = file_id(o.map_file);
      if (id.empty() || id == seen) return {};
      seen = id;
      auto m = read_netmap_file(o.map_file);
      if (!m || (!m->self.public_key.is_zero() && m->self.public_key != own)) {
        ctx.log.debug("--follow: skipping " + o.map_file +
                      (m ? ": not this node's map" : ": " + m.status().message()));
        return {};
      }
      std::vector<ProbePeer> peers;
      for (const auto& p : m->peers)
        if (wanted(p)) peers.push_back(ProbePeer{p.public_key, p.name, p.endpoints});
      return peers;
    };
  }
  auto mode = parse_socket_mode(o.socket);
  if (!mode) return report(ctx, mode.status());
  auto t = open_transport(static_cast<uint16_t>(o.port), *mode);
  if (!t) return report(ctx, t.status());
  ctx.log.info("using a " + (*t)->mode() + " socket on port " + std::to_string(o.port));
  std::vector<SockAddr> seen_as;
  auto paths = probe(**t, *key, opt, &ctx.log, &seen_as);
  if (!paths) return report(ctx, paths.status());
  add_moved_mappings(&doc, seen_as);

  doc.generated_at = static_cast<int64_t>(std::time(nullptr));
  doc.public_key = own;
  doc.peers = std::move(*paths);
  if (o.json || !ctx.stdout_tty) ctx.out << dump_json(endpoints_to_json(doc), true) << "\n";
  else print_human(ctx.out, doc);
  ctx.out.flush();
  if (!ctx.out) return report(ctx, io_error("cannot write to standard output"));
  return 0;
}

}  // namespace mesh::punch
