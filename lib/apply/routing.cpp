#include "apply/routing.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "apply/memo.h"
#include "core/file.h"

namespace mesh::apply {

std::string sysctl_path(const std::string& key) {
  std::string p = key;
  std::replace(p.begin(), p.end(), '.', '/');
  return p;
}

std::map<std::string, std::string> read_sysctls(const std::vector<std::string>& keys,
                                                const std::string& proc_sys) {
  std::map<std::string, std::string> out;
  for (const auto& k : keys) {
    std::ifstream f(proc_sys + "/" + sysctl_path(k));
    std::string v;
    if (f && std::getline(f, v)) out[k] = v;
  }
  return out;
}

std::string saved_sysctls_path(const std::string& dir, const std::string& interface) {
  return dir + "/" + interface + ".sysctl";
}

std::map<std::string, std::string> parse_saved_sysctls(std::string_view text) {
  std::map<std::string, std::string> out;
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    std::string k = line.substr(0, eq);
    // Only the keys mesh-apply writes: a damaged file cannot make it write
    // anything else under /proc/sys.
    if (k != kForwardV4 && k != kForwardV6 && k != kSrcValidMark) continue;
    out[k] = line.substr(eq + 1);
  }
  return out;
}

std::string format_saved_sysctls(const std::map<std::string, std::string>& saved) {
  std::string o;
  for (const auto& [k, v] : saved) o += k + "=" + v + "\n";
  return o;
}

std::map<std::string, std::string> load_saved_sysctls(const std::string& dir, const std::string& interface) {
  auto t = read_file(saved_sysctls_path(dir, interface), 4096);
  if (!t) return {};
  return parse_saved_sysctls(*t);
}

namespace {

Status write_sysctl(const std::string& proc_sys, const std::string& key, const std::string& value) {
  std::string path = proc_sys + "/" + sysctl_path(key);
  std::ofstream f(path);
  if (f) f << value << "\n";
  f.close();
  if (!f) return io_error("cannot set " + key + " (" + path + ")");
  return Status::ok();
}

Status store_saved(const std::string& dir, const std::string& interface,
                   const std::map<std::string, std::string>& saved) {
  std::string path = saved_sysctls_path(dir, interface);
  if (saved.empty()) {
    ::unlink(path.c_str());
    return Status::ok();
  }
  ::mkdir(dir.c_str(), 0700);
  return write_file_atomic(path, format_saved_sysctls(saved), 0600);
}

}  // namespace

Status apply_sysctls(const std::string& dir, const std::string& interface, const Plan& plan,
                     const Current& cur, const std::string& proc_sys) {
  if (plan.sysctl_enable.empty() && plan.sysctl_restore.empty()) return Status::ok();
  std::map<std::string, std::string> saved = cur.saved_sysctls;
  for (const auto& k : plan.sysctl_enable) {
    auto it = cur.sysctls.find(k);
    if (!saved.count(k)) saved[k] = it == cur.sysctls.end() ? "0" : it->second;
  }
  // Saved first: a crash after the write still lets `down` put it back.
  MESH_TRY(store_saved(dir, interface, saved));
  for (const auto& k : plan.sysctl_enable) MESH_TRY(write_sysctl(proc_sys, k, "1"));
  for (const auto& [k, v] : plan.sysctl_restore) {
    MESH_TRY(write_sysctl(proc_sys, k, v));
    saved.erase(k);
  }
  return store_saved(dir, interface, saved);
}

Status restore_all_sysctls(const std::string& dir, const std::string& interface,
                           std::vector<std::string>* restored, const std::string& proc_sys) {
  auto saved = load_saved_sysctls(dir, interface);
  for (const auto& [k, v] : saved) {
    MESH_TRY(write_sysctl(proc_sys, k, v));
    restored->push_back(k);
  }
  ::unlink(saved_sysctls_path(dir, interface).c_str());
  return Status::ok();
}

std::vector<RoutedNetwork> route_table(const Desired& want) {
  std::map<Prefix, std::vector<RouteCandidate>> nets;
  for (const auto& p : want.peers)
    for (const auto& r : p.routes)
      if (!is_default_route(r.network)) nets[r.network].push_back({p.public_key, p.name, r.metric});
  std::vector<RoutedNetwork> out;
  for (auto& [n, cs] : nets) {
    std::sort(cs.begin(), cs.end(), [](const RouteCandidate& a, const RouteCandidate& b) {
      return a.metric != b.metric ? a.metric < b.metric : a.public_key < b.public_key;
    });
    out.push_back({n, std::move(cs)});
  }
  return out;
}

Json route_table_json(const std::vector<RoutedNetwork>& table) {
  Json nets = Json::array();
  for (const auto& n : table) {
    Json rs = Json::array();
    for (const auto& c : n.routers)
      rs.push_back({{"public_key", c.public_key.to_base64()}, {"name", c.name}, {"metric", c.metric}});
    nets.push_back({{"network", n.network.to_string()}, {"routers", std::move(rs)}});
  }
  return Json{{"networks", std::move(nets)}};
}

Result<std::vector<RoutedNetwork>> parse_route_table(const Json& j, const std::string& source) {
  JsonView v(j, source);
  std::vector<RoutedNetwork> out;
  MESH_ASSIGN(auto nets, v.field("networks"));
  MESH_ASSIGN(auto els, nets.elements());
  for (auto& e : els) {
    RoutedNetwork n;
    MESH_ASSIGN(auto text, e.get_string("network"));
    auto p = Prefix::parse(text);
    if (!p) return e.error(p.status().message());
    n.network = p->canonical();
    MESH_ASSIGN(auto rs, e.field("routers"));
    MESH_ASSIGN(auto rels, rs.elements());
    for (auto& r : rels) {
      RouteCandidate c;
      MESH_ASSIGN(auto key, r.get_string("public_key"));
      auto k = PublicKey::from_base64(key);
      if (!k) return r.error(k.status().message());
      c.public_key = *k;
      MESH_ASSIGN(c.name, r.get_string("name"));
      MESH_ASSIGN(auto m, r.get_int("metric", 0, 1 << 30));
      c.metric = static_cast<int>(m);
      n.routers.push_back(std::move(c));
    }
    if (n.routers.empty()) return e.error("a network needs at least one router");
    out.push_back(std::move(n));
  }
  return out;
}

std::string route_table_path(const std::string& dir, const std::string& interface) {
  return dir + "/" + interface + ".routes";
}

Status store_route_table(const std::string& dir, const std::string& interface,
                         const std::vector<RoutedNetwork>& table) {
  std::string path = route_table_path(dir, interface);
  if (table.empty()) {
    ::unlink(path.c_str());
    return Status::ok();
  }
  ::mkdir(dir.c_str(), 0700);
  return write_file_atomic(path, dump_json(route_table_json(table)) + "\n", 0600);
}

void HaState::observe(const PublicKey& k, uint64_t rx_bytes, int64_t last_handshake_sec, int64_t wall_sec,
                      int64_t now_ms) {
  auto [it, fresh] = peers_.try_emplace(k);
  Peer& p = it->second;
  if (fresh) {
    p.rx = rx_bytes;
    p.rx_changed_ms = now_ms;  // the benefit of the doubt, for dead_after_ms
  } else if (rx_bytes != p.rx) {
    // A restarted daemon starts its counters again: any change is traffic.
    p.rx = rx_bytes;
    p.rx_changed_ms = now_ms;
  }
  p.handshake_recent = last_handshake_sec > 0 && wall_sec - last_handshake_sec < 180;
  bool up = p.handshake_recent && now_ms - p.rx_changed_ms <= t_.dead_after_ms;
  if (!up)
    p.alive_since_ms = -1;
  else if (p.alive_since_ms < 0)
    p.alive_since_ms = now_ms;  // at start too: a restarted watcher does not rush back
}

bool HaState::alive(const PublicKey& k, int64_t now_ms) const {
  auto it = peers_.find(k);
  if (it == peers_.end()) return false;
  const Peer& p = it->second;
  return p.alive_since_ms >= 0 && p.handshake_recent && now_ms - p.rx_changed_ms <= t_.dead_after_ms;
}

PublicKey HaState::choose(const RoutedNetwork& net, const std::optional<PublicKey>& holder, int64_t now_ms) const {
  // net.routers is sorted by metric, then key.
  const RouteCandidate* cur = nullptr;
  if (holder)
    for (const auto& c : net.routers)
      if (c.public_key == *holder) cur = &c;
  if (!cur) {
    for (const auto& c : net.routers)
      if (alive(c.public_key, now_ms)) return c.public_key;
    return net.routers.front().public_key;
  }
  if (alive(cur->public_key, now_ms)) {
    // Fail back only to a better router that has stayed alive a while.
    for (const auto& c : net.routers) {
      if (&c == cur || c.metric >= cur->metric) break;
      auto it = peers_.find(c.public_key);
      if (alive(c.public_key, now_ms) && now_ms - it->second.alive_since_ms >= t_.hold_down_ms)
        return c.public_key;
    }
    return cur->public_key;
  }
  for (const auto& c : net.routers)
    if (alive(c.public_key, now_ms)) return c.public_key;
  return cur->public_key;  // nobody alive: moving would not help
}

namespace {

int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::optional<PublicKey> holder_of(const DeviceState& d, const Prefix& net) {
  for (const auto& p : d.peers)
    if (std::find(p.allowed_ips.begin(), p.allowed_ips.end(), net) != p.allowed_ips.end()) return p.public_key;
  return std::nullopt;
}

const PeerState* find_peer(const DeviceState& d, const PublicKey& k) {
  for (const auto& p : d.peers)
    if (p.public_key == k) return &p;
  return nullptr;
}

std::string name_of(const RoutedNetwork& n, const std::optional<PublicKey>& k) {
  if (!k) return "";
  for (const auto& c : n.routers)
    if (c.public_key == *k) return c.name;
  return k->to_base64();
}

struct TableFile {
  std::string path;
  struct timespec mtime {};
  off_t size = -1;
  std::vector<RoutedNetwork> table;

  // Re-reads the file when it changed (one stat per tick otherwise).
  void refresh(const Log& log) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      if (size != -1) log.info("route table " + path + " is gone: no routes to watch");
      size = -1;
      table.clear();
      return;
    }
    if (st.st_size == size && st.st_mtim.tv_sec == mtime.tv_sec && st.st_mtim.tv_nsec == mtime.tv_nsec) return;
    size = st.st_size;
    mtime = st.st_mtim;
    auto j = read_json_file(path);
    if (!j) { log.warn(j.status().message()); return; }
    auto t = parse_route_table(*j, path);
    if (!t) { log.warn(t.status().message()); return; }
    table = std::move(*t);
  }
};

}  // namespace

Result<std::string> run_routes_show(const std::string& interface, const std::string& backend,
                                    const BackendEnv& env) {
  MESH_ASSIGN(auto wg, choose_backend(backend, interface, env));
  MESH_ASSIGN(bool exists, wg->exists());
  if (!exists) return unavailable("no WireGuard interface " + interface + " served by the " + wg->name() + " backend");
  std::vector<RoutedNetwork> table;
  std::string path = route_table_path(env.state_dir, interface);
  if (::access(path.c_str(), F_OK) == 0) {
    MESH_ASSIGN(Json j, read_json_file(path));
    MESH_ASSIGN(table, parse_route_table(j, path));
  }
  MESH_ASSIGN(DeviceState dev, wg->get());
  int64_t wall = env.now();
  Json nets = Json::array();
  for (const auto& n : table) {
    auto h = holder_of(dev, n.network);
    Json rs = Json::array();
    for (const auto& c : n.routers) {
      const PeerState* p = find_peer(dev, c.public_key);
      Json e{{"name", c.name}, {"public_key", c.public_key.to_base64()}, {"metric", c.metric}};
      e["handshake_age"] = p && p->last_handshake_sec > 0 ? Json(wall - p->last_handshake_sec) : Json(nullptr);
      e["rx_bytes"] = p ? Json(p->rx_bytes) : Json(nullptr);
      rs.push_back(std::move(e));
    }
    nets.push_back({{"network", n.network.to_string()},
                    {"via", h ? Json(name_of(n, h)) : Json(nullptr)},
                    {"routers", std::move(rs)}});
  }
  return dump_json(Json{{"interface", interface}, {"networks", std::move(nets)}}) + "\n";
}

Status run_routes_watch(const WatchOptions& opt, const BackendEnv& env, std::ostream& out, const Log& log) {
  MESH_ASSIGN(auto wg, choose_backend(opt.backend, opt.interface, env));
  MESH_ASSIGN(bool exists, wg->exists());
  if (!exists)
    return unavailable("no WireGuard interface " + opt.interface + " served by the " + wg->name() + " backend");
  TableFile file{route_table_path(env.state_dir, opt.interface)};
  HaState ha(opt.timing);
  for (int64_t tick = 0; opt.max_ticks == 0 || tick < opt.max_ticks; ++tick) {
    if (tick) std::this_thread::sleep_for(std::chrono::milliseconds(opt.interval_ms));
    file.refresh(log);
    if (file.table.empty()) {
      // Nothing to watch: only notice the interface going away.
      auto still = wg->exists();
      if (still && !*still) {
        log.info(opt.interface + " is gone; the route watcher stops");
        return Status::ok();
      }
      continue;
    }
    auto dev = wg->get();
    if (!dev) {
      auto exists = wg->exists();
      if (exists && !*exists) {
        log.info(opt.interface + " is gone; the route watcher stops");
        return Status::ok();
      }
      log.warn(dev.status().message());
      continue;
    }
    int64_t now = mono_ms(), wall = env.now();
    for (const auto& p : dev->peers)
      ha.observe(p.public_key, p.rx_bytes, p.last_handshake_sec, wall, now);
    DeviceUpdate u;
    std::vector<Json> events;
    for (const auto& n : file.table) {
      auto h = holder_of(*dev, n.network);
      if (!h) continue;  // not applied yet (or the network was just dropped)
      PublicKey want = ha.choose(n, h, now);
      if (want == *h) continue;
      PeerUpdate pu;
      pu.public_key = want;
      pu.update_only = true;
      // Inserting the prefix for the new router takes it from the old one
      // (WireGuard's allowed-IPs trie has one owner per prefix): no window.
      pu.allowed_ips = {n.network};
      u.peers.push_back(std::move(pu));
      bool back = false;
      for (const auto& c : n.routers) {
        if (c.public_key == want) { back = true; break; }
        if (c.public_key == *h) break;
      }
      events.push_back(Json{{"event", back ? "failback" : "failover"},
                            {"network", n.network.to_string()},
                            {"from", name_of(n, h)},
                            {"to", name_of(n, want)},
                            {"time", wall}});
    }
    if (u.peers.empty()) continue;
    // The memo's snapshot no longer describes the device: the next apply
    // reads it back (and keeps these choices, see choose_routes()).
    remove_memo(env.state_dir, opt.interface);
    Status s = wg->set(u);
    if (!s) {
      log.warn("cannot move routes: " + s.message());
      continue;
    }
    for (const auto& e : events) out << dump_json(e) << "\n";
    out << std::flush;
  }
  return Status::ok();
}

}  // namespace mesh::apply
