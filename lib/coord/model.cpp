#include "coord/model.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <chrono>
#include <system_error>
#include <thread>
#include <nlohmann/json.hpp>

#include "coord/mapjson.h"
#include "coord/revoked.h"
#include "coord/digest.h"
#include "core/base64.h"

namespace mesh::coord {
namespace {

void sorted_insert(std::vector<uint32_t>& v, uint32_t x) {
  auto it = std::lower_bound(v.begin(), v.end(), x);
  if (it == v.end() || *it != x) v.insert(it, x);
}

bool sorted_erase(std::vector<uint32_t>& v, uint32_t x) {
  auto it = std::lower_bound(v.begin(), v.end(), x);
  if (it == v.end() || *it != x) return false;
  v.erase(it);
  return true;
}

void sort_unique(std::vector<uint32_t>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

Json strings(const std::vector<std::string>& v) { return Json(v); }

}  // namespace

std::string turn_password(const std::string& secret, const std::string& username) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(username.data()), username.size(), out, &len);
  return base64_encode(std::span<const uint8_t>(out, len));
}

std::string SetupKey::unusable_reason(int64_t now) const {
  if (revoked) return "setup key is revoked";
  if (expires_at != 0 && now >= expires_at) return "setup key has expired";
  if (usage_limit != 0 && used >= usage_limit) return "setup key usage limit reached";
  return "";
}

Json SetupKey::to_json() const {
  return Json{{"id", id},
              {"name", name},
              {"reusable", reusable},
              {"usage_limit", usage_limit},
              {"used", used},
              {"expires_at", expires_at},
              {"revoked", revoked},
              {"ephemeral", ephemeral},
              {"ephemeral_timeout", ephemeral_timeout},
              {"groups", groups},
              {"tags", tags},
              {"peer_name", peer_name},
              {"created_at", created_at}};
}

PeerAttrs Peer::attrs() const {
  return PeerAttrs{name, groups, tags, {ipv4, ipv6}, owner_email, idp_groups};
}

static Json endpoints_json(const std::vector<Candidate>& eps) {
  Json a = Json::array();
  for (const auto& c : eps) a.push_back(candidate_to_json(c));
  return a;
}

// Login peers carry their owner (setup-key peers' records are unchanged).
static Json with_owner(Json j, const Peer& p) {
  if (p.owner.empty()) return j;
  j["owner"] = p.owner;
  j["owner_email"] = p.owner_email;
  j["idp_groups"] = p.idp_groups;
  j["login_expires_at"] = p.login_expires_at;
  j["login_expired"] = p.login_expired;
  j["owner_disabled"] = p.owner_disabled;
  return j;
}

std::string Peer::refusal() const {
  if (disabled) return "peer is disabled";
  if (owner_disabled) return "peer is cut off: its user is disabled";
  if (login_expired)
    return "login expired: log in again (mesh-coord login, or mesh-up --login) to restore this node";
  return "";
}

Json Peer::to_json() const {
  return with_owner(Json{{"id", id},
              {"name", name},
              {"public_key", public_key.to_base64()},
              {"addresses", {ipv4.to_string(), ipv6.to_string()}},
              {"listen_port", listen_port},
              {"groups", strings(groups)},
              {"tags", strings(tags)},
              {"disabled", disabled},
              {"ephemeral", ephemeral},
              {"ephemeral_timeout", ephemeral_timeout},
              {"setup_key_id", setup_key_id},
              {"created_at", created_at},
              {"last_seen", last_seen.load()},
              {"endpoints", endpoints_json(endpoints)},
              {"endpoints_at", endpoints_at},
              {"serial", serial}},
                    *this);
}

Json Peer::to_record() const {
  return with_owner(Json{{"id", id},
              {"name", name},
              {"public_key", public_key.to_base64()},
              {"host_index", host_index},
              {"ipv4", ipv4.to_string()},
              {"ipv6", ipv6.to_string()},
              {"listen_port", listen_port},
              {"groups", groups},
              {"tags", tags},
              {"disabled", disabled},
              {"ephemeral", ephemeral},
              {"ephemeral_timeout", ephemeral_timeout},
              {"setup_key_id", setup_key_id},
              {"created_at", created_at},
              {"last_seen", last_seen.load()},
              {"endpoints", endpoints_json(endpoints)},
              {"endpoints_at", endpoints_at}},
                    *this);
}

Result<std::unique_ptr<Peer>> Peer::from_record(const Json& j) {
  auto up = std::make_unique<Peer>();
  Peer& p = *up;
  try {
    p.id = j.at("id").get<uint32_t>();
    p.name = j.at("name").get<std::string>();
    MESH_ASSIGN(p.public_key, PublicKey::from_base64(j.at("public_key").get<std::string>()));
    p.host_index = j.at("host_index").get<uint32_t>();
    MESH_ASSIGN(p.ipv4, IpAddr::parse(j.at("ipv4").get<std::string>()));
    MESH_ASSIGN(p.ipv6, IpAddr::parse(j.at("ipv6").get<std::string>()));
    p.listen_port = j.at("listen_port").get<uint16_t>();
    p.groups = j.at("groups").get<std::vector<std::string>>();
    p.tags = j.at("tags").get<std::vector<std::string>>();
    p.disabled = j.at("disabled").get<bool>();
    p.ephemeral = j.at("ephemeral").get<bool>();
    p.ephemeral_timeout = j.at("ephemeral_timeout").get<int64_t>();
    p.setup_key_id = j.at("setup_key_id").get<int64_t>();
    p.created_at = j.at("created_at").get<int64_t>();
    p.last_seen = j.value("last_seen", int64_t{0});
    JsonView v(j, "peer record");
    MESH_ASSIGN(auto eps, v.field("endpoints"));
    MESH_ASSIGN(auto els, eps.elements());
    for (auto& e : els) {
      MESH_ASSIGN(auto c, parse_candidate(e, false));
      p.endpoints.push_back(c);
    }
    p.endpoints_at = j.value("endpoints_at", int64_t{0});
    p.owner = j.value("owner", "");
    p.owner_email = j.value("owner_email", "");
    p.idp_groups = j.value("idp_groups", std::vector<std::string>{});
    p.login_expires_at = j.value("login_expires_at", int64_t{0});
    p.login_expired = j.value("login_expired", false);
    p.owner_disabled = j.value("owner_disabled", false);
  } catch (const std::exception& e) {
    return Status(Exit::Config, std::string("corrupt peer record: ") + e.what());
  }
  return up;
}

// ---------------------------------------------------------------- queries

Peer* Model::by_id(uint32_t id) { return id < by_id_.size() ? by_id_[id].get() : nullptr; }
const Peer* Model::by_id(uint32_t id) const {
  return id < by_id_.size() ? by_id_[id].get() : nullptr;
}
Peer* Model::by_key(const PublicKey& k) {
  auto it = by_key_.find(k);
  return it == by_key_.end() ? nullptr : by_id(it->second);
}
Peer* Model::by_name(const std::string& n) {
  auto it = by_name_.find(n);
  return it == by_name_.end() ? nullptr : by_id(it->second);
}
Peer* Model::find(const std::string& ref) {
  if (Peer* p = by_name(ref)) return p;
  if (ref.size() == 44) {
    auto k = PublicKey::from_base64(ref);
    if (k) return by_key(*k);
  }
  if (!ref.empty() && ref.size() < 10 && ref.find_first_not_of("0123456789") == std::string::npos)
    return by_id(static_cast<uint32_t>(std::stoul(ref)));
  return nullptr;
}

std::vector<const Peer*> Model::peers() const {
  std::vector<const Peer*> out;
  for (const auto& p : by_id_)
    if (p) out.push_back(p.get());
  return out;
}

int64_t Model::credential_expiry() const {
  int64_t half = std::max<int64_t>(cfg_.credential_lifetime / 2, 1);
  return (cred_window_ + 2) * half;
}

int64_t Model::credential_window(int64_t now) const {
  int64_t half = std::max<int64_t>(cfg_.credential_lifetime / 2, 1);
  return now / half;
}

// ---------------------------------------------------------------- allocation

IpAddr Model::host_v4(uint32_t index) const {
  return IpAddr::v4(cfg_.ipv4.canonical().addr.v4_host_order() + index);
}

IpAddr Model::host_v6(uint32_t index) const {
  IpAddr a = cfg_.ipv6.canonical().addr;
  uint32_t low = (uint32_t(a.bytes[12]) << 24 | uint32_t(a.bytes[13]) << 16 |
                  uint32_t(a.bytes[14]) << 8 | a.bytes[15]) + index;
  a.bytes[12] = uint8_t(low >> 24);
  a.bytes[13] = uint8_t(low >> 16);
  a.bytes[14] = uint8_t(low >> 8);
  a.bytes[15] = uint8_t(low);
  return a;
}

Result<uint32_t> Model::allocate_host() const {
  // Usable host indexes: 1 .. 2^(32-len) - 2 (no network or broadcast
  // address). Allocation moves forward and wraps only when the end is
  // reached, so a deleted peer's addresses are not handed out again soon.
  uint64_t span = cfg_.ipv4.len >= 31 ? 0 : (uint64_t(1) << (32 - cfg_.ipv4.len)) - 2;
  if (span == 0) return Status(Exit::Config, "IPv4 overlay prefix is too small");
  uint32_t n = next_host_ < 1 || next_host_ > span ? 1 : next_host_;
  for (uint64_t tries = 0; tries < span; ++tries) {
    if (!used_hosts_.count(n)) return n;
    n = n >= span ? 1 : n + 1;
  }
  return temp_failure("overlay address space is exhausted");
}

uint16_t Model::pick_listen_port(uint32_t) const {
  // Random, so that peers behind one NAT get distinct mappings; avoid ports
  // other peers already use (best effort: 40,000 choices).
  for (int i = 0; i < 64; ++i) {
    uint32_t r = 0;
    random_bytes(reinterpret_cast<uint8_t*>(&r), sizeof r);
    auto port = static_cast<uint16_t>(20000 + r % 40000);
    if (!used_ports_.count(port)) return port;
  }
  uint32_t r = 0;
  random_bytes(reinterpret_cast<uint8_t*>(&r), sizeof r);
  return static_cast<uint16_t>(20000 + r % 40000);
}

// ---------------------------------------------------------------- compilation

void Model::load_peer(std::unique_ptr<Peer> p) {
  uint32_t id = p->id;
  if (by_id_.size() <= id) by_id_.resize(id + 1), versions_.resize(id + 1);
  by_name_[p->name] = id;
  by_key_[p->public_key] = id;
  used_hosts_.insert(p->host_index);
  used_ports_.insert(p->listen_port);
  next_id_ = std::max(next_id_, id + 1);
  next_host_ = std::max(next_host_, p->host_index + 1);  // the server restores the stored value after loading
  p->version = versions_[id] = ++version_counter_;
  render(*p);
  by_id_[id] = std::move(p);
}

void Model::render(Peer& p) const {
  MapPeer mp;
  mp.name = p.name;
  mp.public_key = p.public_key;
  mp.addresses = {Prefix{p.ipv4, 32}, Prefix{p.ipv6, 128}};
  mp.allowed_ips = mp.addresses;
  mp.endpoints = p.endpoints;
  mp.keepalive = cfg_.keepalive;
  mp.groups = p.groups;
  p.text_ok = peer_json_text(mp, p.entry_text);
  p.sources_text = "\"" + mp.addresses[0].to_string() + "\",\"" + mp.addresses[1].to_string() + "\"";
}

void Model::compile() {
  auto t_content = [](const PolicyRule& r, size_t i) {
    uint64_t h = hash_str(r.name, mix(i));
    h = hash_str(r.proto, h);
    for (const auto& pr : r.ports) h = mix(h ^ (uint64_t(pr.lo) << 16 | pr.hi));
    return h;
  };
  // Indexes so that a rule's sets are built from the peers it names rather
  // than by testing every peer against every rule.
  std::unordered_map<std::string, std::vector<uint32_t>> by_group, by_tag;
  std::vector<uint32_t> all;
  for (auto& p : by_id_) {
    if (!p) continue;
    p->src_rules.clear();
    p->dst_rules.clear();
    if (p->cut_off()) continue;
    all.push_back(p->id);
    for (const auto& g : p->groups) by_group[g].push_back(p->id);
    for (const auto& t : p->tags) by_tag[t].push_back(p->id);
  }
  auto select = [&](const Selector& s, std::vector<uint32_t>& out) {
    switch (s.kind) {
      case Selector::Kind::All: out.insert(out.end(), all.begin(), all.end()); break;
      case Selector::Kind::Route: break;  // grants a route (compile_routes), selects no peer
      case Selector::Kind::Peer: {
        auto it = by_name_.find(s.name);
        if (it != by_name_.end() && !by_id_[it->second]->cut_off()) out.push_back(it->second);
        break;
      }
      case Selector::Kind::User:
      case Selector::Kind::IdpGroup:
        for (uint32_t id : all)
          if (selector_matches(policy_, s, by_id_[id]->attrs())) out.push_back(id);
        break;
      case Selector::Kind::Cidr:
        for (uint32_t id : all) {
          const Peer& p = *by_id_[id];
          if (s.cidr.contains(p.ipv4) || s.cidr.contains(p.ipv6)) out.push_back(id);
        }
        break;
      case Selector::Kind::Group: {
        if (auto it = by_group.find(s.name); it != by_group.end())
          out.insert(out.end(), it->second.begin(), it->second.end());
        auto g = policy_.groups.find(s.name);
        if (g == policy_.groups.end()) break;
        for (const auto& m : g->second.members) {
          auto it = by_name_.find(m);
          if (it != by_name_.end() && !by_id_[it->second]->cut_off()) out.push_back(it->second);
        }
        for (const auto& t : g->second.tags)
          if (auto it = by_tag.find(t); it != by_tag.end())
            out.insert(out.end(), it->second.begin(), it->second.end());
        break;
      }
    }
  };
  rules_.assign(policy_.rules.size(), {});
  for (size_t i = 0; i < policy_.rules.size(); ++i) {
    const PolicyRule& r = policy_.rules[i];
    CompiledRule& c = rules_[i];
    c.content_hash = t_content(r, i);
    c.text_ok = rule_head_json_text(FirewallRule{{}, r.proto, r.ports, r.name}, c.head_text);
    for (const auto& s : r.src) select(s, c.src);
    for (const auto& s : r.dst) select(s, c.dst);
    for (auto* v : {&c.src, &c.dst}) {
      sort_unique(*v);
    }
    for (uint32_t id : c.src) {
      c.src_hash ^= mix(id);
      by_id_[id]->src_rules.push_back(static_cast<uint32_t>(i));
    }
    for (uint32_t id : c.dst) by_id_[id]->dst_rules.push_back(static_cast<uint32_t>(i));
  }
  compile_routes();
}

void Model::index_rules(Peer& p) {
  p.src_rules.clear();
  p.dst_rules.clear();
  if (p.cut_off()) return;
  PeerAttrs a = p.attrs();
  for (size_t i = 0; i < policy_.rules.size(); ++i) {
    const PolicyRule& r = policy_.rules[i];
    CompiledRule& c = rules_[i];
    bool src = false, dst = false;
    for (const auto& s : r.src) src = src || selector_matches(policy_, s, a);
    for (const auto& s : r.dst) dst = dst || selector_matches(policy_, s, a);
    if (src) {
      sorted_insert(c.src, p.id);
      c.src_hash ^= mix(p.id);
      p.src_rules.push_back(static_cast<uint32_t>(i));
    }
    if (dst) {
      sorted_insert(c.dst, p.id);
      p.dst_rules.push_back(static_cast<uint32_t>(i));
    }
  }
  if (!croutes_.empty()) index_routes(p);
}

void Model::unindex_rules(Peer& p) {
  for (uint32_t r : p.src_rules)
    if (sorted_erase(rules_[r].src, p.id)) rules_[r].src_hash ^= mix(p.id);
  for (uint32_t r : p.dst_rules) sorted_erase(rules_[r].dst, p.id);
  p.src_rules.clear();
  p.dst_rules.clear();
  if (!croutes_.empty()) unindex_routes(p);
}

std::vector<uint32_t> Model::neighbours(const Peer& p) const {
  std::vector<uint32_t> out;
  for (uint32_t r : p.src_rules) out.insert(out.end(), rules_[r].dst.begin(), rules_[r].dst.end());
  for (uint32_t r : p.dst_rules) out.insert(out.end(), rules_[r].src.begin(), rules_[r].src.end());
  if (!croutes_.empty()) route_neighbours(p, out);
  return out;
}

std::vector<uint32_t> Model::visible(uint32_t id) const {
  const Peer* p = by_id(id);
  if (!p) return {};
  std::vector<uint32_t> out = neighbours(*p);
  sort_unique(out);
  sorted_erase(out, id);
  return out;
}

uint64_t Model::compute_digest(const Peer& p, Stamps& st) const {
  uint64_t h = mix(p.version ^ 0x5e1full);
  if (!cfg_.relay_secret.empty() && !cfg_.turn.empty())
    h ^= mix(static_cast<uint64_t>(cred_window_) ^ 0xc4edull);
  if (p.cut_off()) return h;
  std::vector<uint32_t>& mark = st.mark;
  if (mark.size() < by_id_.size()) mark.resize(by_id_.size() + 1024, 0);
  uint32_t gen = ++st.gen;
  if (gen == 0) {  // wrapped: reset the marks
    std::fill(mark.begin(), mark.end(), 0);
    gen = st.gen = 1;
  }
  mark[p.id] = gen;
  auto add = [&](const std::vector<uint32_t>& ids) {
    for (uint32_t q : ids) {
      if (mark[q] == gen) continue;
      mark[q] = gen;
      h ^= mix(uint64_t(q) * 0x100000001B3ull + versions_[q]);
    }
  };
  for (uint32_t r : p.src_rules) add(rules_[r].dst);
  for (uint32_t r : p.dst_rules) add(rules_[r].src);
  // Inbound firewall rules: sources are src(r) minus this peer.
  for (uint32_t r : p.dst_rules) {
    const CompiledRule& c = rules_[r];
    uint64_t s = c.src_hash;
    size_t n = c.src.size();
    if (std::binary_search(c.src.begin(), c.src.end(), p.id)) {
      s ^= mix(p.id);
      --n;
    }
    if (n > 0) h ^= mix(c.content_hash ^ s ^ (uint64_t(r) << 40));
  }
  if (!croutes_.empty()) {
    std::vector<uint32_t> linked;
    h ^= route_digest(p, linked);
    add(linked);
  }
  return h;
}

std::optional<FirewallRule> Model::rule_firewall(uint32_t r, uint32_t self) const {
  const PolicyRule& pr = policy_.rules[r];
  FirewallRule fr;
  for (uint32_t id : rules_[r].src) {
    if (id == self) continue;
    const Peer& q = *by_id_[id];
    fr.sources.push_back(Prefix{q.ipv4, 32});
    fr.sources.push_back(Prefix{q.ipv6, 128});
  }
  if (fr.sources.empty()) return std::nullopt;
  fr.proto = pr.proto;
  fr.ports = pr.ports;
  fr.rule = pr.name;
  return fr;
}

std::vector<uint64_t> Model::digests(const std::vector<uint32_t>& ids) const {
  // A change reaching every map recomputes 100,000 digests (~300 ms on one
  // core, under the writers' lock): split over the cores, each thread with
  // marks of its own. Below a few thousand, a thread costs more than it saves.
  constexpr size_t kPerThread = 8192;
  std::vector<uint64_t> out(ids.size());
  auto run = [&](size_t lo, size_t hi, Stamps& st) {
    for (size_t i = lo; i < hi; ++i)
      if (const Peer* p = by_id(ids[i])) out[i] = compute_digest(*p, st);
  };
  size_t cores = std::max(1u, std::thread::hardware_concurrency());
  size_t n = std::min({cores, size_t{8}, (ids.size() + kPerThread - 1) / kPerThread});
  if (n <= 1) {
    run(0, ids.size(), stamps_);
    return out;
  }
  size_t chunk = (ids.size() + n - 1) / n;
  std::vector<Stamps> marks(n - 1);
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n; ++t) {
    size_t lo = t * chunk, hi = std::min(ids.size(), lo + chunk);
    try {
      threads.emplace_back(run, lo, hi, std::ref(marks[t - 1]));
    } catch (const std::system_error&) {  // no thread to be had: this one does it
      run(lo, hi, stamps_);
    }
  }
  run(0, std::min(ids.size(), chunk), stamps_);
  for (auto& t : threads) t.join();
  return out;
}

Changes Model::recompute(std::vector<uint32_t> ids, int64_t now) {
  if (defer_ > 0) {
    stale_.insert(stale_.end(), ids.begin(), ids.end());
    if (stale_.size() > 2 * by_id_.size() + 1024) sort_unique(stale_);  // many deferred changes: bounded
    return {};
  }
  auto t0 = std::chrono::steady_clock::now();
  sort_unique(ids);
  std::vector<uint64_t> digest = digests(ids);
  Changes ch;
  for (size_t i = 0; i < ids.size(); ++i) {
    uint32_t id = ids[i];
    Peer* p = by_id(id);
    if (!p) continue;
    uint64_t d = digest[i];
    ++stats_.map_computations;
    if (d != p->digest || p->serial == 0) {
      p->digest = d;
      ch.changed.push_back(id);
    }
  }
  if (!ch.changed.empty()) {
    ch.serial = ++serial_counter_;
    for (uint32_t id : ch.changed) {
      by_id_[id]->serial = ch.serial;
      by_id_[id]->generated_at = now;
    }
  }
  stats_.last_incremental_ms = ms_since(t0);
  ++stats_.incremental_recomputes;
  return ch;
}

Changes Model::recompute_all(int64_t now) {
  auto t0 = std::chrono::steady_clock::now();
  std::vector<uint32_t> ids;
  for (const auto& p : by_id_)
    if (p) ids.push_back(p->id);
  if (defer_ > 0) return recompute(std::move(ids), now);
  Changes ch = recompute(std::move(ids), now);
  stats_.last_full_recompute_ms = ms_since(t0);
  ++stats_.full_recomputes;
  return ch;
}

void Model::settle() {
  if (defer_ > 0 || stale_.empty()) return;
  sort_unique(stale_);
  std::vector<uint64_t> digest = digests(stale_);
  for (size_t i = 0; i < stale_.size(); ++i)
    if (Peer* p = by_id(stale_[i])) p->digest = digest[i];
  stats_.map_computations += stale_.size();
  stale_ = {};
}

void Model::rebuild(int64_t) {
  auto t0 = std::chrono::steady_clock::now();
  compile();
  std::vector<uint32_t> ids;
  for (const auto& p : by_id_)
    if (p) ids.push_back(p->id);
  if (defer_ > 0) {
    stale_ = std::move(ids);
    return;
  }
  stale_ = {};
  std::vector<uint64_t> digest = digests(ids);
  for (size_t i = 0; i < ids.size(); ++i) by_id_[ids[i]]->digest = digest[i];
  stats_.map_computations += ids.size();
  stats_.last_full_recompute_ms = ms_since(t0);
  ++stats_.full_recomputes;
}

// ---------------------------------------------------------------- mutations

Changes Model::add_peer(std::unique_ptr<Peer> p, int64_t now) {
  settle();
  uint32_t id = p->id;
  next_host_ = p->host_index + 1;
  load_peer(std::move(p));
  Peer& ref = *by_id_[id];
  index_rules(ref);
  std::vector<uint32_t> affected = neighbours(ref);
  affected.push_back(id);
  return recompute(std::move(affected), now);
}

Changes Model::remove_peer(uint32_t id, int64_t now) {
  settle();
  Peer* p = by_id(id);
  if (!p) return {};
  std::vector<uint32_t> affected = neighbours(*p);
  unindex_rules(*p);
  by_name_.erase(p->name);
  by_key_.erase(p->public_key);
  used_hosts_.erase(p->host_index);
  used_ports_.erase(p->listen_port);
  by_id_[id].reset();
  return recompute(std::move(affected), now);
}

Changes Model::rename_peer(uint32_t id, const std::string& name, int64_t now) {
  Peer* p = by_id(id);
  if (!p) return {};
  std::string old = p->name;
  Changes ch = update_peer(id, true, now, [&](Peer& q) { q.name = name; });
  by_name_.erase(old);
  by_name_[name] = id;
  return ch;
}

Changes Model::rekey_peer(uint32_t id, const PublicKey& key, int64_t now) {
  Peer* p = by_id(id);
  if (!p) return {};
  PublicKey old = p->public_key;
  // Not a membership change: rules select by name, group and tag, not key.
  Changes ch = update_peer(id, false, now, [&](Peer& q) { q.public_key = key; });
  by_key_.erase(old);
  by_key_[key] = id;
  return ch;
}

Changes Model::set_policy(Policy p, int64_t now) {
  settle();
  policy_ = std::move(p);
  compile();
  return recompute_all(now);
}

Changes Model::tick_credentials(int64_t now) {
  int64_t w = credential_window(now);
  if (w == cred_window_) return {};
  settle();
  cred_window_ = w;
  if (cfg_.relay_secret.empty() || cfg_.turn.empty()) return {};
  return recompute_all(now);
}

Changes Model::reissue_all(int64_t now) {
  Changes ch;
  for (const auto& p : by_id_)
    if (p) ch.changed.push_back(p->id);
  if (ch.changed.empty()) return ch;
  ch.serial = ++serial_counter_;
  for (uint32_t id : ch.changed) {
    by_id_[id]->serial = ch.serial;
    by_id_[id]->generated_at = now;
  }
  return ch;
}

// ---------------------------------------------------------------- maps

NetMap Model::build_map(const Peer& p, bool lists) const {
  NetMap m;
  m.serial = p.serial;
  m.generated_at = p.generated_at;
  m.self.name = p.name;
  m.self.public_key = p.public_key;
  m.self.addresses = {Prefix{p.ipv4, cfg_.ipv4.len}, Prefix{p.ipv6, cfg_.ipv6.len}};
  m.self.groups = p.groups;
  m.self.listen_port = p.listen_port;
  m.self.mtu = cfg_.mtu;
  m.dns_domain = cfg_.dns_domain;
  if (!p.cut_off() && !croutes_.empty()) router_map(p, m);
  if (!p.cut_off() && lists) {
    std::vector<std::pair<uint32_t, std::vector<PeerRoute>>> via;
    if (!croutes_.empty()) via = client_routes(p);
    auto next_via = via.begin();
    for (uint32_t id : visible(p.id)) {
      const Peer& q = *by_id_[id];
      MapPeer mp;
      mp.name = q.name;
      mp.public_key = q.public_key;
      mp.addresses = {Prefix{q.ipv4, 32}, Prefix{q.ipv6, 128}};
      mp.allowed_ips = mp.addresses;
      mp.endpoints = q.endpoints;
      mp.keepalive = cfg_.keepalive;
      mp.groups = q.groups;
      while (next_via != via.end() && next_via->first < id) ++next_via;
      if (next_via != via.end() && next_via->first == id) mp.routes = next_via->second;
      m.peers.push_back(std::move(mp));
    }
    for (uint32_t r : p.dst_rules)
      if (auto fr = rule_firewall(r, p.id)) m.inbound.push_back(std::move(*fr));
  }
  m.stun = cfg_.stun;
  if (!cfg_.relay_secret.empty()) {
    int64_t expiry = credential_expiry();
    for (const auto& t : cfg_.turn) {
      TurnServer ts;
      ts.server = t.server;
      ts.transport = t.transport;
      // One subject per enrolment (NAME@ID): revoking a deleted peer's
      // credentials (coord/revoked.h) never blocks a re-enrolled NAME.
      ts.username = std::to_string(expiry) + ":" + relay_subject(p.name, p.id);
      ts.password = turn_password(cfg_.relay_secret, ts.username);
      ts.expires_at = expiry;
      m.turn.push_back(std::move(ts));
    }
  }
  return m;
}

bool Model::inbound_text(const Peer& p, std::string& inbound) const {
  for (uint32_t r : p.dst_rules) {
    const CompiledRule& c = rules_[r];
    if (!c.text_ok) return false;
    size_t mark = inbound.size();
    if (!inbound.empty()) inbound += ',';
    inbound += c.head_text;
    bool any = false;
    for (uint32_t id : c.src) {
      if (id == p.id) continue;
      if (any) inbound += ',';
      inbound += by_id_[id]->sources_text;
      any = true;
    }
    if (!any) inbound.resize(mark);  // a rule with no other source is left out
    else inbound += "]}";
  }
  return true;
}

Model::MapText Model::map_text(const Peer& p, const SentPeers* base, SentPeers* sent) const {
  std::string text = netmap_json_text(build_map(p, false));
  std::vector<uint32_t> ids;
  if (!p.cut_off()) ids = visible(p.id);
  // Routes through some of these peers (sorted by id, like ids): such an
  // entry depends on the viewer, so a delta always sends it.
  std::vector<std::pair<uint32_t, std::vector<PeerRoute>>> via;
  if (!p.cut_off() && !croutes_.empty()) via = client_routes(p);
  std::vector<SentEntry> now(ids.size());
  std::vector<const std::vector<PeerRoute>*> routes(ids.size(), nullptr);
  auto next_via = via.begin();
  for (size_t k = 0; k < ids.size(); ++k) {
    while (next_via != via.end() && next_via->first < ids[k]) ++next_via;
    if (next_via != via.end() && next_via->first == ids[k]) routes[k] = &next_via->second;
    uint64_t v = versions_[ids[k]];
    now[k] = {ids[k], routes[k] || v > UINT32_MAX ? kResend : uint32_t(v)};
  }
  if (sent) *sent = SentPeers{p.serial, now};
  if (p.cut_off()) return {std::move(text)};
  auto whole = [&] { return MapText{netmap_json_text(build_map(p))}; };
  auto entry = [&](std::string& out, size_t k) {
    const Peer& q = *by_id_[ids[k]];
    if (!q.text_ok) return false;
    if (!routes[k]) {
      out += q.entry_text;
      return true;
    }
    // "routes" sorts last in an entry: it goes before the closing brace.
    std::string r;
    if (!peer_routes_json_text(*routes[k], r)) return false;
    out.append(q.entry_text, 0, q.entry_text.size() - 1);
    out += ',';
    out += r;
    out += '}';
    return true;
  };
  std::string peers, inbound;
  if (!base) {
    peers.reserve(ids.size() * 320);
    for (size_t k = 0; k < ids.size(); ++k) {
      if (k) peers += ',';
      if (!entry(peers, k)) return whole();
    }
  } else {
    PeerEdits e = diff_peers(base->entries, now);
    peers = "\"peer_changes\":{\"base\":" + std::to_string(base->serial) +
            ",\"count\":" + std::to_string(ids.size()) + ",\"inserted\":[";
    for (size_t n = 0; n < e.inserted.size(); ++n) {
      peers += n ? ",[" : "[";
      peers += std::to_string(e.inserted[n]);
      peers += ',';
      if (!entry(peers, e.inserted[n])) return whole();
      peers += ']';
    }
    peers += "],\"removed\":[";
    for (size_t n = 0; n < e.removed.size(); ++n) {
      if (n) peers += ',';
      peers += std::to_string(e.removed[n]);
    }
    peers += "]}";
  }
  if (!inbound_text(p, inbound)) return whole();
  // The skeleton has empty lists at fixed places: firewall.inbound comes
  // first and peers right after generated_at (keys are sorted; a delta's
  // peer_changes takes the place of peers).
  const std::string in_key = "\"inbound\":[", peers_key = "\"peers\":[";
  size_t at = text.find(in_key);
  text.insert(at + in_key.size(), inbound);
  at = text.find(peers_key, at + in_key.size() + inbound.size());
  if (base) text.replace(at, peers_key.size() + 1, peers);
  else text.insert(at + peers_key.size(), peers);
  return {std::move(text), base != nullptr};
}

// ---------------------------------------------------------------- policy

Result<PeerAttrs> Model::resolve_test_party(const std::string& who) const {
  PeerAttrs u;
  if (parse_user_selector(who, &u.user)) return u;
  std::string g;
  if (parse_idp_group_selector(who, &g)) {
    u.user = "someone@idp";  // a login peer in that IdP group only
    u.idp_groups.push_back(g);
    return u;
  }
  if (who.rfind("group:", 0) == 0) {
    PeerAttrs a;
    a.groups.push_back(who.substr(6));
    return a;
  }
  auto it = by_name_.find(who);
  if (it == by_name_.end()) return data_error("unknown peer '" + who + "'");
  return by_id_[it->second]->attrs();
}

Status Model::run_tests(const Policy& p) const {
  for (size_t i = 0; i < p.tests.size(); ++i) {
    const PolicyTest& t = p.tests[i];
    std::string where = "tests[" + std::to_string(i) + "]";
    auto from = resolve_test_party(t.from);
    if (!from) return from.status().with_context(where + ".from");
    Verdict v;
    if (t.to.rfind("route:", 0) == 0) {
      std::string rn = t.to.substr(6);
      auto it = p.routes.find(rn);
      const Route* r = it != p.routes.end() ? &it->second
                       : routes_.count(rn)  ? &routes_.at(rn)
                                            : nullptr;
      if (!r) return data_error(where + ".to: unknown route '" + rn + "'");
      v = evaluate_route(p, *from, *r, t.service);
    } else {
      auto to = resolve_test_party(t.to);
      if (!to) return to.status().with_context(where + ".to");
      v = evaluate(p, *from, *to, t.service);
    }
    if (v.allow != t.expect_allow)
      return data_error(where + ": " + t.from + " -> " + t.to + " " + t.service.to_string() +
                        ": expected " + (t.expect_allow ? "allow" : "deny") + ", policy says " +
                        (v.allow ? "allow" : "deny") + " (" + v.rule + ")");
  }
  return Status::ok();
}

namespace {

struct Coverage {
  bool other = false, icmp = false;
  std::vector<PortRange> tcp, udp;
};

void merge(std::vector<PortRange>& v) {
  std::sort(v.begin(), v.end());
  std::vector<PortRange> out;
  for (const auto& r : v) {
    if (!out.empty() && uint32_t(r.lo) <= uint32_t(out.back().hi) + 1)
      out.back().hi = std::max(out.back().hi, r.hi);
    else
      out.push_back(r);
  }
  v = std::move(out);
}

// a minus b, both merged.
std::vector<PortRange> subtract(const std::vector<PortRange>& a, const std::vector<PortRange>& b) {
  std::vector<PortRange> out;
  for (auto r : a) {
    uint32_t lo = r.lo;
    for (const auto& x : b) {
      if (x.hi < lo || x.lo > r.hi) continue;
      if (x.lo > lo) out.push_back({static_cast<uint16_t>(lo), static_cast<uint16_t>(x.lo - 1)});
      lo = uint32_t(x.hi) + 1;
      if (lo > r.hi) break;
    }
    if (lo <= r.hi) out.push_back({static_cast<uint16_t>(lo), r.hi});
  }
  return out;
}

}  // namespace

Model::Plan Model::plan(const Policy& next) const {
  std::vector<const Peer*> live;
  for (const auto& p : by_id_)
    if (p && !p->cut_off()) live.push_back(p.get());
  auto coverage = [&](const Policy& pol) {
    // Keyed by (source id, destination peer name or "route:NAME").
    std::map<std::pair<uint32_t, std::string>, Coverage> cov;
    std::vector<PeerAttrs> attrs;
    for (const Peer* p : live) attrs.push_back(p->attrs());
    auto grant = [](Coverage& c, const PolicyRule& r) {
      PortRange full{1, 65535};
      if (r.proto == "any") {
        c.other = c.icmp = true;
        c.tcp.push_back(full);
        c.udp.push_back(full);
      } else if (r.proto == "icmp") {
        c.icmp = true;
      } else {
        auto& v = r.proto == "tcp" ? c.tcp : c.udp;
        if (r.ports.empty()) v.push_back(full);
        else v.insert(v.end(), r.ports.begin(), r.ports.end());
      }
    };
    // Routes the policy knows: its own, then the admin-defined ones.
    std::vector<const Route*> routes;
    for (const auto& [n, r] : pol.routes) routes.push_back(&r);
    for (const auto& [n, r] : routes_)
      if (!pol.routes.count(n)) routes.push_back(&r);
    for (const auto& r : pol.rules) {
      std::vector<size_t> src, dst;
      for (size_t i = 0; i < live.size(); ++i) {
        bool s = false, d = false;
        for (const auto& sel : r.src) s = s || selector_matches(pol, sel, attrs[i]);
        for (const auto& sel : r.dst) d = d || selector_matches(pol, sel, attrs[i]);
        if (s) src.push_back(i);
        if (d) dst.push_back(i);
      }
      for (size_t s : src)
        for (size_t d : dst) {
          if (s == d) continue;
          grant(cov[{live[s]->id, live[d]->name}], r);
        }
      for (const Route* route : routes) {
        bool granted = false;
        for (const auto& sel : r.dst)
          granted = granted || (sel.kind == Selector::Kind::Route && sel.name == route->name) ||
                    (sel.kind == Selector::Kind::Cidr && !cidr_grants(sel.cidr, *route).empty());
        if (!granted) continue;
        for (size_t s : src)
          if (evaluate_route(pol, attrs[s], *route, Service{}).rule != "router")
            grant(cov[{live[s]->id, "route:" + route->name}], r);
      }
    }
    for (auto& [k, c] : cov) {
      merge(c.tcp);
      merge(c.udp);
    }
    return cov;
  };
  auto before = coverage(policy_), after = coverage(next);
  Plan plan;
  auto diff = [&](const auto& a, const auto& b, std::vector<AccessEntry>& out) {
    static const Coverage none;
    for (const auto& [k, ca] : a) {
      auto it = b.find(k);
      const Coverage& cb = it == b.end() ? none : it->second;
      const std::string& src = by_id_[k.first]->name;
      const std::string& dst = k.second;
      for (const auto& r : subtract(ca.tcp, cb.tcp)) out.push_back({src, dst, "tcp/" + r.to_string()});
      for (const auto& r : subtract(ca.udp, cb.udp)) out.push_back({src, dst, "udp/" + r.to_string()});
      if (ca.icmp && !cb.icmp) out.push_back({src, dst, "icmp"});
      if (ca.other && !cb.other) out.push_back({src, dst, "other"});
    }
    std::sort(out.begin(), out.end());
  };
  diff(after, before, plan.gained);
  diff(before, after, plan.lost);
  return plan;
}

}  // namespace mesh::coord
