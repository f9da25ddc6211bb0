#include "netmap/endpoints.h"

#include <nlohmann/json.hpp>
#include <set>

namespace mesh {

const PeerPath* EndpointsDoc::find(const PublicKey& k) const {
  for (const auto& p : peers)
    if (p.public_key == k) return &p;
  return nullptr;
}

Result<EndpointsDoc> parse_endpoints(const Json& j, const std::string& source, ParseOptions opt) {
  JsonView v(j, source);
  if (!j.is_object()) return v.error("expected an endpoints object");
  if (opt.strict)
    MESH_TRY(v.check_keys({"version", "generated_at", "public_key", "candidates", "nat", "peers", "stun"}));
  EndpointsDoc d;
  MESH_ASSIGN(auto ver, v.get_int("version"));
  if (ver != 1) return v.error("unsupported version " + std::to_string(ver) + " (expected 1)");
  JsonView f = v;
  if (v.optional_field("generated_at", &f)) { MESH_ASSIGN(d.generated_at, f.as_int()); }
  if (v.optional_field("public_key", &f)) {
    MESH_ASSIGN(auto s, f.as_string());
    auto k = PublicKey::from_base64(s);
    if (!k) return f.error(k.status().message());
    d.public_key = *k;
  }
  if (v.optional_field("candidates", &f)) {
    MESH_ASSIGN(auto els, f.elements());
    for (auto& e : els) {
      MESH_ASSIGN(auto c, parse_candidate(e, opt.strict));
      d.candidates.push_back(c);
    }
  }
  if (v.optional_field("nat", &f)) {
    NatInfo n;
    JsonView g = f;
    if (f.optional_field("mapping", &g)) { MESH_ASSIGN(n.mapping, g.as_string()); }
    if (f.optional_field("filtering", &g)) { MESH_ASSIGN(n.filtering, g.as_string()); }
    d.nat = n;
  }
  if (v.optional_field("peers", &f)) {
    MESH_ASSIGN(auto els, f.elements());
    std::set<PublicKey> seen;
    for (auto& e : els) {
      if (opt.strict)
        MESH_TRY(e.check_keys({"public_key", "name", "status", "endpoint", "kind", "rtt_ms"}));
      PeerPath p;
      MESH_ASSIGN(auto ks, e.get_string("public_key"));
      auto k = PublicKey::from_base64(ks);
      if (!k) return e.error(k.status().message());
      p.public_key = *k;
      if (!seen.insert(p.public_key).second) return e.error("duplicate peer " + ks);
      JsonView g = e;
      if (e.optional_field("name", &g)) { MESH_ASSIGN(p.name, g.as_string()); }
      if (e.optional_field("status", &g)) {
        MESH_ASSIGN(p.status, g.as_string());
        if (p.status != "direct" && p.status != "relayed" && p.status != "relay-needed")
          return g.error("unknown status '" + p.status +
                         "' (expected direct, relayed or relay-needed)");
      }
      if (e.optional_field("endpoint", &g)) {
        MESH_ASSIGN(auto s, g.as_string());
        auto sa = SockAddr::parse(s);
        if (!sa) return g.error(sa.status().message());
        p.endpoint = *sa;
      }
      if (!p.endpoint && p.status != "relay-needed")
        return e.error("endpoint is required unless status is relay-needed");
      if (e.optional_field("kind", &g)) { MESH_ASSIGN(p.kind, g.as_string()); }
      if (e.optional_field("rtt_ms", &g)) { MESH_ASSIGN(p.rtt_ms, g.as_number()); }
      d.peers.push_back(std::move(p));
    }
  }
  if (v.optional_field("stun", &f)) {
    MESH_ASSIGN(auto els, f.elements());
    for (auto& e : els) {
      if (opt.strict)
        MESH_TRY(e.check_keys({"server", "mapped", "other_address", "rtt_ms", "error"}));
      StunResult r;
      MESH_ASSIGN(r.server, e.get_string("server"));
      JsonView g = e;
      for (auto [key, out] : {std::pair{"mapped", &r.mapped}, {"other_address", &r.other_address}}) {
        if (!e.optional_field(key, &g)) continue;
        MESH_ASSIGN(auto s, g.as_string());
        auto sa = SockAddr::parse(s);
        if (!sa) return g.error(sa.status().message());
        *out = *sa;
      }
      if (e.optional_field("rtt_ms", &g)) { MESH_ASSIGN(r.rtt_ms, g.as_number()); }
      if (e.optional_field("error", &g)) { MESH_ASSIGN(r.error, g.as_string()); }
      d.stun.push_back(std::move(r));
    }
  }
  return d;
}

Result<EndpointsDoc> read_endpoints_file(const std::string& path, ParseOptions opt) {
  auto j = read_json_file(path);
  if (!j) return j.status();
  return parse_endpoints(*j, path == "-" ? "<stdin>" : path, opt);
}

Json endpoints_to_json(const EndpointsDoc& d) {
  Json cands = Json::array();
  for (const auto& c : d.candidates) cands.push_back(candidate_to_json(c));
  Json peers = Json::array();
  for (const auto& p : d.peers) {
    Json jp{{"public_key", p.public_key.to_base64()}, {"status", p.status}};
    if (!p.name.empty()) jp["name"] = p.name;
    jp["endpoint"] = p.endpoint ? Json(p.endpoint->to_string()) : Json(nullptr);
    if (!p.kind.empty()) jp["kind"] = p.kind;
    if (p.rtt_ms >= 0) jp["rtt_ms"] = p.rtt_ms;
    peers.push_back(std::move(jp));
  }
  Json out{{"version", d.version}, {"generated_at", d.generated_at}};
  if (d.public_key) out["public_key"] = d.public_key->to_base64();
  out["candidates"] = cands;
  if (d.nat) out["nat"] = {{"mapping", d.nat->mapping}, {"filtering", d.nat->filtering}};
  out["peers"] = peers;
  if (!d.stun.empty()) {
    Json st = Json::array();
    for (const auto& r : d.stun) {
      Json jr{{"server", r.server}};
      jr["mapped"] = r.mapped ? Json(r.mapped->to_string()) : Json(nullptr);
      if (r.other_address) jr["other_address"] = r.other_address->to_string();
      if (r.rtt_ms >= 0) jr["rtt_ms"] = r.rtt_ms;
      if (!r.error.empty()) jr["error"] = r.error;
      st.push_back(std::move(jr));
    }
    out["stun"] = st;
  }
  return out;
}

EndpointsDoc merge_endpoints(const std::vector<EndpointsDoc>& docs) {
  EndpointsDoc out;
  for (const auto& d : docs) {
    out.generated_at = std::max(out.generated_at, d.generated_at);
    if (d.public_key) out.public_key = d.public_key;
    if (d.nat) out.nat = d.nat;
    if (!d.stun.empty()) out.stun = d.stun;
    for (const auto& c : d.candidates) {
      bool have = false;
      for (const auto& x : out.candidates) have = have || x == c;
      if (!have) out.candidates.push_back(c);
    }
    for (const auto& p : d.peers) {
      bool replaced = false;
      for (auto& x : out.peers) {
        if (x.public_key == p.public_key) {
          // A later "relay-needed" must not undo an earlier working path.
          if (!(p.status == "relay-needed" && x.status != "relay-needed")) x = p;
          replaced = true;
        }
      }
      if (!replaced) out.peers.push_back(p);
    }
  }
  return out;
}

}  // namespace mesh
