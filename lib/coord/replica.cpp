#include "coord/replica.h"

#include <nlohmann/json.hpp>

#include "coord/policy.h"
#include "coord/routeops.h"
#include "coord/store.h"

namespace mesh::coord {

Result<SetupKey> setup_key_from_record(const Json& j) {
  SetupKey k;
  try {
    k.id = j.at("id");
    k.name = j.at("name");
    k.hash = j.at("hash");
    k.reusable = j.at("reusable");
    k.usage_limit = j.at("usage_limit");
    k.used = j.at("used");
    k.expires_at = j.at("expires_at");
    k.revoked = j.at("revoked");
    k.ephemeral = j.at("ephemeral");
    k.ephemeral_timeout = j.at("ephemeral_timeout");
    k.groups = j.at("groups").get<std::vector<std::string>>();
    k.tags = j.at("tags").get<std::vector<std::string>>();
    k.peer_name = j.value("peer_name", "");
    k.created_at = j.at("created_at");
  } catch (const std::exception& e) {
    return Status(Exit::Config, std::string("corrupt setup key record: ") + e.what());
  }
  return k;
}

namespace {

uint64_t number(const std::string& s) { return std::strtoull(s.c_str(), nullptr, 10); }

// Brings an existing peer to its new record (the fields a mutation can
// change after the join; id, key, addresses and port are fixed).
Status update_peer(Model& m, Peer& cur, const Peer& next, int64_t now) {
  uint32_t id = cur.id;
  if (cur.name != next.name) m.rename_peer(id, next.name, now);
  // A login's owner, IdP groups and cut-off state select it in the policy
  // like groups do.
  bool membership = cur.groups != next.groups || cur.tags != next.tags ||
                    cur.disabled != next.disabled || cur.owner != next.owner ||
                    cur.owner_email != next.owner_email || cur.idp_groups != next.idp_groups ||
                    cur.login_expires_at != next.login_expires_at ||
                    cur.login_expired != next.login_expired ||
                    cur.owner_disabled != next.owner_disabled;
  bool other = cur.endpoints != next.endpoints || cur.endpoints_at != next.endpoints_at ||
               cur.ephemeral != next.ephemeral || cur.ephemeral_timeout != next.ephemeral_timeout;
  if (membership || other)
    m.update_peer(id, membership, now, [&](Peer& q) {
      q.groups = next.groups;
      q.tags = next.tags;
      q.disabled = next.disabled;
      q.owner = next.owner;
      q.owner_email = next.owner_email;
      q.idp_groups = next.idp_groups;
      q.login_expires_at = next.login_expires_at;
      q.login_expired = next.login_expired;
      q.owner_disabled = next.owner_disabled;
      q.endpoints = next.endpoints;
      q.endpoints_at = next.endpoints_at;
      q.ephemeral = next.ephemeral;
      q.ephemeral_timeout = next.ephemeral_timeout;
    });
  Peer* p = m.by_id(id);
  if (p) p->last_seen = std::max(p->last_seen.load(), next.last_seen.load());
  return Status::ok();
}

}  // namespace

Result<ApplyResult> apply_change(Model& model, std::vector<SetupKey>& keys, RevocationList& revoked,
                                 const Json& what, int64_t now) {
  ApplyResult out;
  // The writer's serials come with the change: no digest is needed now.
  Model::DeferDigests defer(model);
  const Json empty = Json::object();
  const Json& meta = what.contains("meta") ? what["meta"] : empty;
  // Peers, serials and counters concern only the peers named (an announce,
  // a join, a rotation: the frequent changes); anything else, everyone.
  for (const auto& [k, v] : what.items())
    if (k != "peers" && k != "serials" && k != "serial_runs" && k != "meta") out.everyone = true;
  for (const auto& [k, v] : meta.items())
    if (k != "serial_counter" && k != "next_host" && k != "next_peer_id" && k != "cred_window")
      out.everyone = true;
  // The policy first: peers' changes in the same transaction were made
  // under it.
  if (meta.contains("policy")) {
    MESH_ASSIGN(auto j, parse_json(meta["policy"].get<std::string>(), "replicated policy"));
    MESH_ASSIGN(auto p, parse_policy(j, "replicated policy"));
    model.set_policy(std::move(p), now);
  }
  if (meta.contains("cred_window")) {
    int64_t w = static_cast<int64_t>(number(meta["cred_window"].get<std::string>()));
    if (w != model.cred_window()) {
      model.set_cred_window(w);
      model.rebuild(now);  // digests over the new credentials; serials kept
    }
  }
  // Another replica started with --dns-domain: its serials for every map
  // come in the same change.
  if (meta.contains("dns_domain")) {
    std::string d = meta["dns_domain"].get<std::string>();
    if (d != model.config().dns_domain) {
      model.set_dns_domain(std::move(d));
      out.maps_changed = true;
    }
  }
  if (what.contains("peers")) {
    // Removals first: a name or address freed here may be taken below.
    for (const auto& [ids, rec] : what["peers"].items())
      if (rec.is_null()) {
        uint32_t id = static_cast<uint32_t>(number(ids));
        if (model.by_id(id)) {
          model.remove_peer(id, now);
          out.woken.push_back(id);
          ++out.peers;
        }
      }
    for (const auto& [ids, rec] : what["peers"].items()) {
      if (rec.is_null()) continue;
      MESH_ASSIGN(auto np, Peer::from_record(rec));
      out.woken.push_back(np->id);
      Peer* cur = model.by_id(np->id);
      if (cur && cur->public_key != np->public_key) {
        model.remove_peer(cur->id, now);
        cur = nullptr;
      }
      if (cur) {
        MESH_TRY(update_peer(model, *cur, *np, now));
      } else {
        np->last_seen = std::max(np->last_seen.load(), now);
        model.add_peer(std::move(np), now);
      }
      ++out.peers;
    }
  }
  // Routes defined by the route verbs ("route" records; the policy's own
  // came with it): before the serials, which count their changes.
  if (what.contains("records") && what["records"].contains("route")) {
    std::map<std::string, Route> routes = model.admin_routes();
    std::vector<std::pair<std::string, Json>> upserts;
    for (const auto& [name, rec] : what["records"]["route"].items()) {
      routes.erase(name);
      if (!rec.is_null()) upserts.emplace_back(name, rec);
    }
    MESH_ASSIGN(auto added, routes_from_records(upserts));
    for (auto& [name, r] : added) routes[name] = std::move(r);
    model.set_routes(std::move(routes), now);
    out.maps_changed = true;
  }
  // The writer's serials: the same map has the same serial on every replica.
  auto adopt = [&](uint32_t id, uint64_t serial, int64_t at) {
    Peer* p = model.by_id(id);
    if (!p) return;
    p->serial = serial;
    p->generated_at = at;
    out.maps_changed = true;
    out.woken.push_back(id);
  };
  MESH_TRY(for_each_logged_serial(what, adopt));
  if (meta.contains("serial_counter"))
    model.set_serial_counter(number(meta["serial_counter"].get<std::string>()));
  if (meta.contains("next_host"))
    model.set_next_host(static_cast<uint32_t>(number(meta["next_host"].get<std::string>())));
  if (meta.contains("next_peer_id"))
    model.set_next_id(static_cast<uint32_t>(number(meta["next_peer_id"].get<std::string>())));
  if (meta.contains("relay_revocations")) {
    MESH_ASSIGN(auto j, parse_json(meta["relay_revocations"].get<std::string>(),
                                   "replicated relay revocations"));
    MESH_ASSIGN(revoked, RevocationList::from_json(j));
    out.revocations = true;
  }
  if (what.contains("setup_keys")) {
    for (const auto& [ids, rec] : what["setup_keys"].items()) {
      (void)ids;
      MESH_ASSIGN(auto k, setup_key_from_record(rec));
      auto it = std::find_if(keys.begin(), keys.end(), [&](const SetupKey& o) { return o.id == k.id; });
      if (it != keys.end())
        *it = std::move(k);
      else
        keys.push_back(std::move(k));
    }
  }
  return out;
}

}  // namespace mesh::coord
