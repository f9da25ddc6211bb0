// `mesh-coord rotate-key`: replace this node's WireGuard key pair at the
// coordinator (man/mesh-coord.8, KEY ROTATION; coord/rotate.h).
//
// Crash safety: the new private key is written to KEY.new (0600, atomically)
// before the coordinator is asked, and KEY keeps the old one until the
// coordinator acknowledged the swap; only then is KEY.new renamed over KEY.
// A run that finds KEY.new left by an interrupted one finishes that rotation
// instead of starting another: it sends the same new key again, and when the
// coordinator refuses the old key (the swap happened but its answer was
// lost) and accepts the new one, it only completes the files.
#include <cerrno>
#include <cstdio>
#include <optional>
#include <nlohmann/json.hpp>

#include "common.h"
#include "coord/rotate.h"
#include "core/file.h"
#include "netmap/netmap.h"
#include "verbs.h"

namespace mesh::coord {
namespace {

struct RotateFiles {
  std::string key, pending, registration, map;
};

// The pending key: KEY.new when an earlier run left one (resumed), else a
// fresh one written there first.
Result<SecretKey> pending_key(Context& ctx, const std::string& path, bool* resumed) {
  std::string warning;
  auto k = read_private_key_file(path, &warning);
  if (k) {
    if (!warning.empty()) ctx.log.warn(warning);
    *resumed = true;
    return *k;
  }
  if (k.status().code() != Exit::NoInput) return k.status();
  *resumed = false;
  SecretKey fresh = SecretKey::generate_private();
  std::string text = fresh.to_base64() + "\n";
  Status s = write_file_atomic(path, text, 0600, Overwrite::No);
  wipe(text);
  MESH_TRY(s);
  return fresh;
}

// The map for the new key, checked as `map` checks it, into `path`.
Status fetch_map(Client& cli, const PeerConn& c, const SecretKey& fresh, const std::string& path,
                 const std::string* body) {
  std::string text;
  if (body) {
    text = *body;
  } else {
    MESH_ASSIGN(auto r, cli.peer("GET", "/v1/map", fresh, c.coordinator, "", 30));
    text = r.body;
  }
  MESH_ASSIGN(auto j, parse_json(text, "coordinator map"));
  MESH_ASSIGN(auto m, parse_netmap(j, "coordinator map"));
  if (m.self.public_key != fresh.public_key())
    return data_error("coordinator map: self.public_key is not the new key");
  MESH_TRY(check_map_overlay(j));
  return write_file_atomic(path, dump_json(j, true) + "\n", 0600);
}

// Moves KEY.new over KEY (the old key is gone only now).
Status commit_key(const RotateFiles& f) {
  if (std::rename(f.pending.c_str(), f.key.c_str()) != 0) return errno_status(f.key, errno);
  auto slash = f.key.rfind('/');
  return fsync_dir(slash == std::string::npos ? "." : slash == 0 ? "/" : f.key.substr(0, slash));
}

}  // namespace

int cmd_rotate_key(Context& ctx, int argc, char** argv) {
  CLI::App app("Replace this node's WireGuard key pair, keeping its name, addresses and groups");
  PeerTarget t;
  std::string state, map_out;
  app.add_option("--state", state,
                 "mesh-up state directory: DIR/node.key, DIR/registration.json, DIR/map.json");
  app.add_option("--registration", t.registration,
                 "registration JSON saved from 'mesh-coord join' (updated in place)");
  app.add_option("--server", t.servers,
                 "coordinator URL, repeated for replicas (overrides the registration's)")
      ->allow_extra_args(false);
  app.add_option("--coordinator-key", t.coordinator_key,
                 "coordinator public key (base64), when not using --registration");
  app.add_option("--key", t.key_file, "this node's WireGuard private key file (replaced)");
  app.add_option("--map", map_out, "write the map of the new key to FILE atomically (mode 0600)");
  app.add_option("--ca-file", t.ca_file, "CA certificates for an https coordinator");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (!state.empty()) {
    if (!t.key_file.empty() || !t.registration.empty() || !map_out.empty())
      return report(ctx, usage_error("--state names the key, registration and map files: "
                                     "give it without --key, --registration and --map"));
    t.key_file = state + "/node.key";
    t.registration = state + "/registration.json";
    map_out = state + "/map.json";
  }
  if (t.key_file.empty()) return report(ctx, usage_error("give --state DIR or --key FILE"));
  RotateFiles f{t.key_file, t.key_file + ".new", t.registration, map_out};

  auto c = resolve_peer(ctx, t);
  if (!c) return report(ctx, c.status());
  Json reg = Json::object();
  if (!f.registration.empty()) {
    auto j = read_json_file(f.registration);
    if (!j) return report(ctx, j.status());
    reg = std::move(*j);
  }
  PublicKey old_pub = c->node.public_key();
  bool resumed = false;
  auto fresh = pending_key(ctx, f.pending, &resumed);
  if (!fresh) return report(ctx, fresh.status());
  PublicKey new_pub = fresh->public_key();
  if (new_pub == old_pub) {
    // KEY.new is the key in use: a rotation already completed.
    std::remove(f.pending.c_str());
    return report(ctx, data_error(f.pending + " held the key in use; removed it, run again"));
  }
  if (resumed) ctx.log.info("finishing the rotation to " + new_pub.to_base64() + " left in " + f.pending);

  Client cli(c->servers, c->ca_file, ctx.log);
  std::string nonce = Client::new_nonce();
  auto proof = rotation_proof(*fresh, c->coordinator, old_pub, nonce);
  if (!proof) return report(ctx, proof.status());
  std::string body = dump_json(rotate_request_json(RotateRequest{new_pub, *proof}));
  auto r = cli.peer("POST", "/v1/rotate-key", c->node, c->coordinator, body, nonce, 30);
  Json out;
  std::optional<std::string> map_body;
  if (r) {
    auto j = parse_json(r->body, "coordinator response");
    if (!j) return report(ctx, j.status());
    out = std::move(*j);
  } else {
    int http = cli.last_status();
    if (http == 400 || http == 409) {
      // This new key can never be used (refused as such): the next run makes another.
      std::remove(f.pending.c_str());
      return report(ctx, r.status());
    }
    // The old key refused (or no answer): did an earlier run, or this
    // request, swap the key before its answer was lost?
    if (http != 401 && http != 403 && http != 0) return report(ctx, r.status());
    auto m = cli.peer("GET", "/v1/map", *fresh, c->coordinator, "", 30);
    if (!m) return report(ctx, r.status());
    ctx.log.info("the coordinator holds the new key already: completing the rotation");
    map_body = m->body;
    out = reg;
    out["previous_public_key"] = old_pub.to_base64();
  }
  // Files: the map and registration of the new key, then the key itself.
  if (!f.map.empty())
    if (Status s = fetch_map(cli, *c, *fresh, f.map, map_body ? &*map_body : nullptr); !s)
      ctx.log.warn("cannot fetch the new key's map: " + s.message() + " (watch fetches it)");
  if (!f.registration.empty()) {
    // The coordinator's registration (authentic: the response MAC was
    // checked) for the fields the file has, the coordinator key included.
    if (!map_body)
      for (const auto& [k, v] : out.items())
        if (reg.contains(k)) reg[k] = v;
    reg["public_key"] = new_pub.to_base64();
    if (Status s = write_file_atomic(f.registration, dump_json(reg) + "\n", 0600); !s)
      return report(ctx, s);
  }
  if (Status s = commit_key(f); !s) return report(ctx, s);
  out["public_key"] = new_pub.to_base64();
  out["previous_public_key"] = old_pub.to_base64();
  out["resumed"] = resumed;
  out.erase("maps_changed");
  out["server"] = cli.server();
  return print_json(ctx, out);
}

}  // namespace mesh::coord
