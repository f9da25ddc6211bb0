#include "coord/requests.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace mesh::coord {

// The name and name hint of an enrolment, after `v` checked its keys.
static Status parse_names(const JsonView& v, JoinRequest& r) {
  for (auto [field, out] : {std::pair{"name", &r.name}, std::pair{"name_hint", &r.name_hint}}) {
    JsonView f = v;
    if (!v.optional_field(field, &f)) continue;
    MESH_ASSIGN(*out, f.as_string());
    if (!valid_name(*out))
      return f.error("invalid peer name '" + *out +
                     "' (lower case letters, digits, '-', '_', '.'; 1-63)");
  }
  return Status::ok();
}

Result<JoinRequest> parse_join_request(const Json& j) {
  JsonView v(j, "request");
  MESH_TRY(v.check_keys({"setup_key", "name", "name_hint"}));
  JoinRequest r;
  MESH_ASSIGN(r.setup_key, v.get_string("setup_key"));
  MESH_TRY(parse_names(v, r));
  return r;
}

Result<LoginRequest> parse_login_request(const Json& j) {
  JsonView v(j, "request");
  MESH_TRY(v.check_keys({"id_token", "device_handle", "code", "code_verifier", "redirect_uri", "nonce",
                         "name", "name_hint"}));
  LoginRequest r;
  std::pair<const char*, std::string*> fields[] = {
      {"id_token", &r.enrol.setup_key}, {"device_handle", &r.device_handle}, {"code", &r.code},
      {"code_verifier", &r.code_verifier}, {"redirect_uri", &r.redirect_uri}, {"nonce", &r.nonce}};
  for (auto [field, out] : fields) {
    JsonView f = v;
    if (!v.optional_field(field, &f)) continue;
    MESH_ASSIGN(*out, f.as_string());
    if (out->empty()) return f.error("empty");
  }
  int ways = !r.enrol.setup_key.empty() + !r.device_handle.empty() + !r.code.empty();
  if (ways != 1) return v.error("give one of id_token, device_handle and code");
  if (!r.code.empty() && (r.code_verifier.empty() || r.redirect_uri.empty() || r.nonce.empty()))
    return v.error("code needs code_verifier, redirect_uri and nonce");
  if (r.code.empty() && (!r.code_verifier.empty() || !r.redirect_uri.empty()))
    return v.error("code_verifier and redirect_uri go with code");
  if (!r.device_handle.empty() && !r.nonce.empty()) return v.error("nonce goes with id_token or code");
  MESH_TRY(parse_names(v, r.enrol));
  return r;
}

Result<std::vector<PublicKey>> parse_punch_request(const Json& j, size_t max_targets) {
  JsonView v(j, "request");
  MESH_TRY(v.check_keys({"peers"}));
  MESH_ASSIGN(auto f, v.field("peers"));
  MESH_ASSIGN(auto els, f.elements());
  if (els.empty() || els.size() > max_targets)
    return f.error("expected 1 to " + std::to_string(max_targets) + " public keys");
  std::vector<PublicKey> targets;
  for (const auto& e : els) {
    MESH_ASSIGN(auto text, e.as_string());
    auto k = PublicKey::from_base64(text);
    if (!k) return e.error(k.status().message());
    if (std::find(targets.begin(), targets.end(), *k) == targets.end()) targets.push_back(*k);
  }
  return targets;
}

Result<int64_t> parse_duration(const JsonView& v) {
  // Seconds as an integer, or "30s", "15m", "12h", "7d".
  if (v.json().is_number_integer()) return v.as_int(0, int64_t(10) * 365 * 86400);
  auto s = v.as_string();
  if (!s) return s.status();
  if (s->size() < 2) return v.error("invalid duration '" + *s + "' (e.g. 3600, 30s, 15m, 12h, 7d)");
  int64_t mult = 0;
  switch (s->back()) {
    case 's': mult = 1; break;
    case 'm': mult = 60; break;
    case 'h': mult = 3600; break;
    case 'd': mult = 86400; break;
    default: return v.error("invalid duration '" + *s + "' (e.g. 3600, 30s, 15m, 12h, 7d)");
  }
  std::string n = s->substr(0, s->size() - 1);
  if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string::npos)
    return v.error("invalid duration '" + *s + "' (e.g. 3600, 30s, 15m, 12h, 7d)");
  return std::stoll(n) * mult;
}

static Status name_list(const JsonView& v, std::vector<std::string>* out) {
  MESH_ASSIGN(auto els, v.elements());
  for (auto& e : els) {
    MESH_ASSIGN(auto s, e.as_string());
    if (!valid_name(s)) return e.error("invalid name '" + s + "'");
    if (std::find(out->begin(), out->end(), s) == out->end()) out->push_back(s);
  }
  return Status::ok();
}

Result<SetupKey> parse_setup_key_request(const Json& j, int64_t now) {
  JsonView v(j, "request");
  SetupKey k;
  MESH_TRY(v.check_keys({"name", "reusable", "usage_limit", "expires_in", "ephemeral",
                         "ephemeral_timeout", "groups", "tags", "peer_name"}));
  MESH_ASSIGN(k.name, v.get_string("name"));
  MESH_ASSIGN(auto nf, v.field("name"));
  if (!valid_name(k.name)) return nf.error("invalid setup key name '" + k.name + "'");
  JsonView f = v;
  if (v.optional_field("reusable", &f)) { MESH_ASSIGN(k.reusable, f.as_bool()); }
  k.usage_limit = k.reusable ? 0 : 1;
  if (v.optional_field("usage_limit", &f)) {
    MESH_ASSIGN(k.usage_limit, f.as_int(0, 1000000000));
    if (!k.reusable && k.usage_limit != 1)
      return f.error("a one-off key has a usage limit of 1 (set reusable for more)");
  }
  if (v.optional_field("expires_in", &f)) {
    MESH_ASSIGN(auto d, parse_duration(f));
    if (d <= 0) return f.error("must be positive");
    k.expires_at = now + d;
  }
  if (v.optional_field("ephemeral", &f)) { MESH_ASSIGN(k.ephemeral, f.as_bool()); }
  if (v.optional_field("ephemeral_timeout", &f)) {
    MESH_ASSIGN(k.ephemeral_timeout, parse_duration(f));
    if (k.ephemeral_timeout <= 0) return f.error("must be positive");
  }
  if (v.optional_field("groups", &f)) MESH_TRY(name_list(f, &k.groups));
  if (v.optional_field("tags", &f)) MESH_TRY(name_list(f, &k.tags));
  if (v.optional_field("peer_name", &f)) {
    MESH_ASSIGN(k.peer_name, f.as_string());
    if (!valid_name(k.peer_name)) return f.error("invalid peer name '" + k.peer_name + "'");
  }
  return k;
}

Result<std::string> parse_revoke_request(const Json& j) {
  JsonView v(j, "request");
  MESH_TRY(v.check_keys({"key"}));
  return v.get_string("key");
}

Result<PeerOpRequest> parse_peer_op_request(const Json& j, std::string_view op) {
  JsonView v(j, "request");
  MESH_TRY(op == "rename"       ? v.check_keys({"peer", "name"})
           : op == "set-groups" ? v.check_keys({"peer", "groups"})
                                : v.check_keys({"peer"}));
  PeerOpRequest r;
  MESH_ASSIGN(r.peer, v.get_string("peer"));
  if (op == "rename") {
    MESH_ASSIGN(r.name, v.get_string("name"));
    if (!valid_name(r.name)) return data_error("request: name: invalid peer name '" + r.name + "'");
  } else if (op == "set-groups") {
    MESH_ASSIGN(auto g, v.field("groups"));
    MESH_TRY(name_list(g, &r.groups));
  }
  return r;
}

Result<PolicyCheckRequest> parse_policy_check_request(const Json& j) {
  JsonView v(j, "request");
  MESH_TRY(v.check_keys({"from", "to", "port"}));
  PolicyCheckRequest r;
  MESH_ASSIGN(r.from, v.get_string("from"));
  MESH_ASSIGN(r.to, v.get_string("to"));
  std::string port = "any";
  JsonView f = v;
  if (v.optional_field("port", &f)) { MESH_ASSIGN(port, f.as_string()); }
  auto svc = Service::parse(port);
  if (!svc) return data_error("request: port: " + svc.status().message());
  r.service = *svc;
  return r;
}

}  // namespace mesh::coord
