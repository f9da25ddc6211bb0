// Coordinator benchmark (bench/coord runs it). Two parts:
//   bench_coord model            in-process: a synthetic mesh of 10,000 peers,
//                                200 groups and 500 rules; times a full recompute,
//                                one join (incremental map work), one policy change,
//                                and, as the in-run reference, what a join would
//                                cost if every map were recomputed (Headscale-style).
//   bench_coord push MESH_COORD STATE_DIR [POSTGRES_DSN]
//                                writes the same mesh into STATE_DIR (or the
//                                PostgreSQL database), starts the real `mesh-coord
//                                serve` on it (two replicas on PostgreSQL), parks
//                                1,000 signed long-poll watchers spread over them,
//                                makes a change on the first server and one on the
//                                last and measures when each watcher has its new
//                                map; then 200 joins, 50 concurrent; reports RSS.
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "coord/auth.h"
#include "coord/client.h"
#include "coord/mapjson.h"
#include "coord/model.h"
#include "coord/store.h"
#include "core/base64.h"
#include "core/file.h"

using namespace mesh;
using namespace mesh::coord;
using Clock = std::chrono::steady_clock;

namespace {

// The mesh's size. Groups and rules grow with the peers (one group per 50
// peers, one rule per 20), so a map holds about as many peers at 100,000 as
// at 10,000, as in an organisation of many teams.
struct Scale {
  int peers = 10000;
  int watchers = 1000;
  int groups() const { return std::max(100, peers / 50); }
  int rules() const { return std::max(250, peers / 20); }
};

double ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// CPU time (user + system) a process has used, in ms.
double cpu_ms(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t p = text.rfind(')');
  if (p == std::string::npos) return -1;
  std::istringstream in(text.substr(p + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return double(utime + stime) * 1000.0 / double(sysconf(_SC_CLK_TCK));
}

// CPU time of every process named postgres (the bench's own server and
// its backends; none other runs in CI), in ms.
double postgres_cpu_ms() {
  double t = 0;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
      std::ifstream f(std::string("/proc/") + e->d_name + "/comm");
      std::string comm;
      if (std::getline(f, comm) && comm == "postgres") t += std::max(0.0, cpu_ms(std::atoi(e->d_name)));
    }
    closedir(d);
  }
  return t;
}

long rss_kb(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

std::string policy_text(const Scale& sc, uint32_t seed, int changed_rule = -1,
                        bool monitor = false) {
  std::mt19937 rng(seed);
  const unsigned ng = unsigned(sc.groups());
  Json groups = Json::object();
  for (unsigned g = 0; g < ng; ++g) groups["g" + std::to_string(g)] = Json::object();
  Json rules = Json::array();
  for (int r = 0; r < sc.rules(); ++r) {
    Json rule{{"name", "r" + std::to_string(r)},
              {"src", {"g" + std::to_string(rng() % ng)}},
              {"dst", {"g" + std::to_string(rng() % ng)}}};
    switch (rng() % 3) {
      case 0: rule["proto"] = "tcp"; rule["ports"] = {int(rng() % 1000 + 1), "8000-8080"}; break;
      case 1: rule["proto"] = "udp"; rule["ports"] = {int(rng() % 1000 + 1)}; break;
      default: rule["proto"] = "any";
    }
    if (r == changed_rule) rule["ports"] = {443}, rule["proto"] = "tcp";
    rules.push_back(rule);
  }
  if (monitor) {
    // A monitoring group that may reach every peer: a peer joining it
    // enters every map (the worst case for a push).
    groups["mon"] = Json::object();
    rules.push_back({{"name", "monitoring"}, {"src", {"mon"}}, {"dst", {"all"}}, {"proto", "tcp"},
                     {"ports", {9100}}});
  }
  return dump_json(Json{{"groups", groups}, {"rules", rules}});
}

Policy parse(const std::string& text) {
  auto j = parse_json(text, "bench policy");
  auto p = parse_policy(*j, "bench policy");
  if (!p) {
    std::cerr << p.status().message() << "\n";
    std::exit(1);
  }
  return *p;
}

ModelConfig config() {
  ModelConfig c;
  c.ipv4 = *Prefix::parse("100.64.0.0/10");
  c.ipv6 = *Prefix::parse("fd00:b:c::/48");
  return c;
}

std::unique_ptr<Peer> synth_peer(Model& m, const Scale& sc, int i, const PublicKey& key) {
  auto p = std::make_unique<Peer>();
  p->id = m.new_peer_id();
  p->name = "p" + std::to_string(i);
  p->public_key = key;
  p->host_index = *m.allocate_host();
  p->ipv4 = m.host_v4(p->host_index);
  p->ipv6 = m.host_v6(p->host_index);
  p->listen_port = static_cast<uint16_t>(20000 + i % 40000);
  p->groups = {"g" + std::to_string(i % sc.groups())};
  p->endpoints = {Candidate{SockAddr{IpAddr::v4(0xC6120000u + static_cast<uint32_t>(i)), 51820}, "srflx"}};
  p->created_at = 1;
  return p;
}

// Routes (issue 19): 20 subnet routes with two routers each, each granted
// to one group by a rule, on the same mesh; the figures above again, as
// ratios to those measured without routes in this run.
void bench_routes(Model& m, const Scale& sc, double full_ms, double join_ms, double build_ms) {
  auto j = parse_json(policy_text(sc, 1, 7), "bench policy");
  std::map<std::string, Route> routes;
  for (int r = 0; r < 20; ++r) {
    Route rt;
    rt.name = "rt" + std::to_string(r);
    rt.networks = {Prefix{IpAddr::v4(0xC6120000u + (uint32_t(r) << 8)), 24}};  // 198.18.r.0/24
    rt.routers = {RouteRouter{"p" + std::to_string(2 * r), "", 10},
                  RouteRouter{"p" + std::to_string(2 * r + 1), "", 20}};
    routes[rt.name] = rt;
    (*j)["rules"].push_back({{"name", "use-" + rt.name}, {"src", {"g" + std::to_string(r + 40)}},
                             {"dst", {"route:" + rt.name}}, {"proto", "tcp"}, {"ports", {22}}});
  }
  Policy pol = parse(dump_json(*j));
  auto serve = [&](const std::string& name, size_t* bytes) {
    const Peer* p = m.by_name(name);
    std::string body;
    auto a = Clock::now();
    for (int i = 0; i < 100; ++i) body = m.map_json(*p);
    *bytes = body.size();
    return ms(a, Clock::now()) / 100;
  };
  size_t plain_bytes = 0;
  double plain_ms = serve("p0", &plain_bytes);  // the router to be, before routes
  m.set_routes(routes, 6);
  std::vector<double> full;
  for (int i = 0; i < 5; ++i) {
    auto a = Clock::now();
    m.set_policy(pol, 7);
    full.push_back(ms(a, Clock::now()));
  }
  std::sort(full.begin(), full.end());
  std::vector<double> joins;
  for (int i = 0; i < 100; ++i) {
    PublicKey k;
    random_bytes(k.bytes.data(), k.bytes.size());
    auto p = synth_peer(m, sc, sc.peers + 1000 + i, k);
    auto a = Clock::now();
    m.add_peer(std::move(p), 8);
    joins.push_back(ms(a, Clock::now()));
  }
  std::sort(joins.begin(), joins.end());
  size_t client_bytes = 0, router_bytes = 0;
  double client_ms = serve("p40", &client_bytes);  // group g40: a client of rt0
  double router_ms = serve("p0", &router_bytes);    // routes rt0
  std::printf("with 20 routes (2 routers each, one group each): full recompute median %.1f ms (%.2fx), "
              "one join median %.3f ms (%.2fx)\n",
              full[full.size() / 2], full[full.size() / 2] / full_ms, joins[joins.size() / 2],
              joins[joins.size() / 2] / join_ms);
  std::printf("with 20 routes: a client's map to JSON (%zu bytes) %.3f ms (%.2fx), a router's (%zu bytes) "
              "%.3f ms (%.2fx its map without routes, %zu bytes)\n",
              client_bytes, client_ms, client_ms / build_ms, router_bytes, router_ms,
              router_ms / plain_ms, plain_bytes);
}

int bench_model(const Scale& sc) {
  Model m(config());
  m.rebuild(0);
  std::vector<PublicKey> keys;
  for (int i = 0; i < sc.peers + 100; ++i) {
    PublicKey k;
    random_bytes(k.bytes.data(), k.bytes.size());
    keys.push_back(k);
  }
  for (int i = 0; i < sc.peers; ++i) m.load_peer(synth_peer(m, sc, i, keys[i]));
  Policy pol = parse(policy_text(sc, 1));
  auto t0 = Clock::now();
  Changes all = m.set_policy(pol, 1);
  auto t1 = Clock::now();
  std::vector<double> full;
  for (int i = 0; i < 5; ++i) {
    auto a = Clock::now();
    m.set_policy(parse(policy_text(sc, 1)), 2);
    full.push_back(ms(a, Clock::now()));
  }
  std::sort(full.begin(), full.end());
  size_t visible = 0;
  for (const Peer* p : m.peers()) visible += m.visible(p->id).size();

  // One join: incremental map work (index the peer into its rules, recompute
  // the digests of the maps it enters). Averaged over 100 joins.
  std::vector<double> joins;
  size_t touched = 0;
  for (int i = 0; i < 100; ++i) {
    auto p = synth_peer(m, sc, sc.peers + i, keys[sc.peers + i]);
    auto a = Clock::now();
    Changes ch = m.add_peer(std::move(p), 3);
    joins.push_back(ms(a, Clock::now()));
    touched += ch.changed.size();
  }
  std::sort(joins.begin(), joins.end());
  // Reference: the same join if every map had to be recomputed.
  auto r0 = Clock::now();
  m.set_policy(parse(policy_text(sc, 1)), 4);
  double naive = ms(r0, Clock::now());

  // One policy change: one rule's ports differ.
  Policy changed = parse(policy_text(sc, 1, 7));
  auto c0 = Clock::now();
  Changes pc = m.set_policy(changed, 5);
  double policy_ms = ms(c0, Clock::now());

  // Building one map's JSON (what a watcher is sent).
  const Peer* sample = m.by_name("p42");
  auto b0 = Clock::now();
  std::string body;
  for (int i = 0; i < 100; ++i) body = m.map_json(*sample);
  double build_ms = ms(b0, Clock::now()) / 100;

  {
    auto x0 = Clock::now();
    NetMap nm;
    for (int i = 0; i < 100; ++i) nm = m.build_map(*sample);
    auto x1 = Clock::now();
    Json jj;
    int reps = getenv("BENCH_JSON_REPS") ? atoi(getenv("BENCH_JSON_REPS")) : 100;
    for (int i = 0; i < reps; ++i) jj = netmap_to_json(nm);
    auto x2 = Clock::now();
    for (int i = 0; i < 100; ++i) body = dump_json(jj);
    auto x3 = Clock::now();
    std::printf("reference, one map through the nlohmann tree: build_map %.3f ms, netmap_to_json %.3f ms, dump %.3f ms\n",
                ms(x0, x1) / 100, ms(x1, x2) / reps, ms(x2, x3) / 100);
  }
  std::printf("synthetic mesh: %d peers, %d groups, %d rules, %.0f peers per map on average\n",
              sc.peers, sc.groups(), sc.rules(), double(visible) / sc.peers);
  std::printf("full recompute (policy set, compile + %zu maps): first %.1f ms, median %.1f ms\n",
              all.changed.size(), ms(t0, t1), full[full.size() / 2]);
  std::printf("one join, map work: median %.3f ms, p99 %.3f ms (%.0f maps recomputed per join)\n",
              joins[joins.size() / 2], joins[joins.size() * 99 / 100], double(touched) / 100);
  std::printf("reference, a join recomputing every map: %.1f ms (incremental is %.0fx faster)\n",
              naive, naive / joins[joins.size() / 2]);
  std::printf("one policy change (one rule's ports): %.1f ms, %zu maps changed\n", policy_ms,
              pc.changed.size());
  std::printf("one map to JSON as served (%zu bytes): %.3f ms\n", body.size(), build_ms);
  // The push bench's write: a peer joining a group that may reach every
  // peer, so it enters every map.
  m.set_policy(parse(policy_text(sc, 1, -1, true)), 6);
  {
    std::vector<double> mj;
    size_t entered = 0;
    for (int i = 0; i < 5; ++i) {
      PublicKey k;
      random_bytes(k.bytes.data(), k.bytes.size());
      auto p = synth_peer(m, sc, sc.peers + 500 + i, k);
      p->groups = {"mon"};
      auto a = Clock::now();
      entered = m.add_peer(std::move(p), 7).changed.size();
      mj.push_back(ms(a, Clock::now()));
    }
    std::sort(mj.begin(), mj.end());
    std::printf("one join entering every map (%zu maps changed): median %.1f ms\n", entered,
                mj[mj.size() / 2]);
  }
  bench_routes(m, sc, full[full.size() / 2], joins[joins.size() / 2], build_ms);
  std::printf("bench process RSS with the model: %.1f MB\n", rss_kb(getpid()) / 1024.0);
  return 0;
}


// The synthetic mesh written into STORE (a PostgreSQL DSN), or DIR/coord.db
// when STORE is empty, in one transaction (not logged as a change). The
// first `watchers` peers get keys the bench holds.
Status write_state(const std::string& dir, const std::string& store, const Scale& sc,
                   std::vector<SecretKey>& watcher_keys) {
  MESH_TRY(make_dirs(dir, 0700));
  MESH_ASSIGN(auto st, Store::open(store.empty() ? dir + "/coord.db" : store));
  Model m(config());
  MESH_TRY(st->begin());
  MESH_TRY(st->clear());
  for (int i = 0; i < sc.peers; ++i) {
    PublicKey pub;
    if (i < sc.watchers) {
      watcher_keys.push_back(SecretKey::generate_private());
      pub = watcher_keys.back().public_key();
    } else {
      random_bytes(pub.bytes.data(), pub.bytes.size());
    }
    auto p = synth_peer(m, sc, i, pub);
    MESH_TRY(st->put_peer(p->id, p->name, pub.to_base64(), dump_json(p->to_record())));
    MESH_TRY(st->set_map_serial(p->id, 1, 1));
    m.load_peer(std::move(p));
  }
  MESH_TRY(st->set_meta("schema_version", std::to_string(kSchemaVersion)));
  MESH_TRY(st->set_meta("policy", policy_text(sc, 1, -1, true)));
  MESH_TRY(st->set_meta("serial_counter", "1"));
  MESH_TRY(st->set_meta("next_host", std::to_string(sc.peers + 1)));
  MESH_TRY(st->set_meta("next_peer_id", std::to_string(sc.peers + 1)));
  MESH_TRY(st->set_meta("ipv4_prefix", "100.64.0.0/10"));
  MESH_TRY(st->set_meta("ipv6_prefix", "fd00:b:c::/48"));
  return st->commit();
}

struct Server {
  pid_t pid = 0;
  std::string url;
  SockAddr addr;
  double startup_ms = 0;
};

Result<Server> start_server(const std::string& prog, const std::string& dir,
                            const std::string& store, const Scale& sc) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return io_error("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  // Every watcher comes from 127.0.0.1: room for all of them from one source.
  std::string conns = std::to_string(std::max(4096, sc.watchers + 1000));
  std::vector<std::string> args{prog, "serve", "--listen", "127.0.0.1:0", "--state", dir,
                                "--max-connections", conns, "--max-connections-per-source", conns};
  if (!store.empty()) {
    args.push_back("--store");
    args.push_back(store);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  Server sv;
  auto start = Clock::now();
  if (posix_spawn(&sv.pid, prog.c_str(), &fa, nullptr, argv.data(), environ) != 0)
    return unavailable("cannot start " + prog);
  close(pipefd[1]);
  std::string line;
  char c;
  while (read(pipefd[0], &c, 1) == 1 && c != '\n') line += c;
  close(pipefd[0]);
  sv.startup_ms = ms(start, Clock::now());
  const std::string pre = "listening on http://";
  if (line.rfind(pre, 0) != 0) {
    kill(sv.pid, SIGTERM);
    return unavailable("server said '" + line + "'");
  }
  sv.url = line.substr(pre.size() - 7);
  auto a = SockAddr::parse(line.substr(pre.size()));
  if (!a) return a.status();
  sv.addr = *a;
  return sv;
}

// One value of the server's /metrics.
double metric(const std::string& url, const std::string& token, const std::string& name) {
  std::FILE* f = popen(("curl -s -H 'Authorization: Bearer " + token + "' " + url +
                        "/metrics | sed -n 's/^" + name + " //p'")
                           .c_str(),
                       "r");
  char buf[64] = {0};
  if (f) {
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    pclose(f);
  }
  return std::atof(buf);
}

double pct(std::vector<double> v, int p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() * p / 100)];
}

// Long-poll watchers on raw keep-alive sockets, each request signed as
// `mesh-coord watch` signs it (coord/auth.h). Thousands are driven from one
// epoll thread: a thread each would measure the bench's own scheduler.
// When round k is open (open_round), the first map a watcher receives
// after it is that round's push, timed from the round's start twice: when
// its last byte reached the watcher's socket (the kernel's receive time,
// SO_TIMESTAMPNS: what a node on its own CPU sees) and when this one
// thread, sharing the cores with the servers, read it. Opening a sealed map
// (what the nodes do on their own CPUs) waits until no socket has data, so
// it does not delay the timing.
class WatcherFleet {
 public:
  WatcherFleet(const std::vector<SecretKey>& keys, const std::vector<Server>& servers,
               const PublicKey& coord, int rounds, bool all_on_first)
      : servers_(servers), latency_(rounds), arrival_(rounds), done_(rounds), t0_(rounds),
        t0_wall_(rounds) {
    for (size_t i = 0; i < keys.size(); ++i) {
      W w;
      w.key = keys[i].public_key().to_base64();
      w.keys = *derive_session_keys(keys[i], coord, keys[i].public_key(), coord);
      w.server = all_on_first ? 0 : int(i % servers.size());
      ws_.push_back(std::move(w));
    }
    for (auto& l : latency_) l.assign(keys.size(), -1);
    for (auto& l : arrival_) l.assign(keys.size(), -1);
    for (auto& d : done_) d = 0;
  }
  ~WatcherFleet() { stop(); }

  void start() {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    connect_more();
    thread_ = std::thread([this] { loop(); });
  }
  void stop() {
    if (!thread_.joinable()) return;
    stop_ = true;
    thread_.join();
    for (auto& w : ws_)
      if (w.fd >= 0) close(w.fd);
    close(ep_);
  }
  void open_round(int k) {
    t0_[k] = Clock::now();
    t0_wall_[k] = std::chrono::system_clock::now();
    round_ = k;
  }
  int done(int k) const { return done_[k]; }
  // From the next request on, ask for whole maps (no delta=1): the
  // reference the deltas are measured against.
  void whole_maps() { whole_ = true; }
  int failures() const { return failures_; }
  int with_map() const { return with_map_; }
  // Read by the bench (`arrived` false) or arrived at the socket.
  std::vector<double> latencies(int k, bool arrived = false) const {
    std::vector<double> l;
    for (double x : (arrived ? arrival_ : latency_)[k])
      if (x >= 0) l.push_back(x);
    return l;
  }

 private:
  struct W {
    std::string key;
    SessionKeys keys;
    int server = 0;
    int fd = -1;
    uint64_t serial = 0;
    int round = -1;  // the last round whose push arrived
    std::chrono::system_clock::time_point arrived;  // kernel time of the last bytes read
    std::string nonce, out, in, sealed;
  };

  // Watchers connect a few hundred at a time, each batch once the one
  // before has its first maps: 10,000 connections at once overflow the
  // listen queue, and the retries that follow are still under way when the
  // rounds start.
  void connect_more() {
    while (next_ < ws_.size() && size_t(with_map_) + kConnecting > next_) connect_one(next_++);
  }

  void connect_one(size_t i) {
    W& w = ws_[i];
    w.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(w.fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    sockaddr_storage ss{};
    socklen_t len = servers_[w.server].addr.to_sockaddr(&ss);
    connect(w.fd, reinterpret_cast<sockaddr*>(&ss), len);  // EINPROGRESS: the write waits
    w.in.clear();
    request(w);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = i;
    epoll_ctl(ep_, EPOLL_CTL_ADD, w.fd, &ev);
  }

  void request(W& w) {
    // With delta=1 the answer is an envelope {"map"|"delta": ...}; the
    // serial is the last one in it either way (open_map).
    std::string target = "/v1/map?since=" + std::to_string(w.serial) +
                         (w.serial == 0 ? "&wait=0" : "&wait=90") + (whole_ ? "" : "&delta=1");
    uint8_t nb[16];
    random_bytes(nb, sizeof nb);
    w.nonce = base64url_encode(nb);
    int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    w.out = "GET " + target + " HTTP/1.1\r\nHost: bench\r\n" + kHdrKey + ": " + w.key + "\r\n" +
            kHdrTime + ": " + std::to_string(now) + "\r\n" + kHdrNonce + ": " + w.nonce + "\r\n" +
            kHdrAuth + ": " + request_mac(w.keys.request, "GET", target, now, w.nonce, "") +
            "\r\n" + kHdrSeal + ": 1\r\n\r\n";
  }

  void reconnect(size_t i) {
    epoll_ctl(ep_, EPOLL_CTL_DEL, ws_[i].fd, nullptr);
    close(ws_[i].fd);
    ++failures_;
    connect_one(i);
  }

  // One whole response in w.in: returns false when more bytes are needed.
  bool answer(size_t i) {
    W& w = ws_[i];
    size_t end = w.in.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    size_t clen = 0;
    if (size_t c = w.in.find("Content-Length: "); c != std::string::npos && c < end)
      clen = std::stoul(w.in.substr(c + 16));
    if (w.in.size() < end + 4 + clen) return false;
    auto now = Clock::now();
    int status = std::atoi(w.in.c_str() + 9);
    if (status == 200) {
      int k = round_;
      if (k >= 0 && w.round < k) {
        latency_[k][i] = ms(t0_[k], now);
        arrival_[k][i] =
            std::chrono::duration<double, std::milli>(w.arrived - t0_wall_[k]).count();
        w.round = k;
        ++done_[k];
      }
      w.sealed = w.in.substr(end + 4, clen);
      w.in.erase(0, end + 4 + clen);
      to_open_.push_back(i);  // the next request needs its serial
      return true;
    }
    if (status != 204) {
      if (failures_++ < 5) std::cerr << "watcher " << i << ": HTTP " << status << "\n";
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    w.in.erase(0, end + 4 + clen);
    request(w);
    return true;
  }

  // Opens a received map for its serial and asks for the next one.
  void open_map(size_t i) {
    W& w = ws_[i];
    auto body = open_body(w.keys.seal_response, w.nonce, w.sealed);
    size_t at = body ? body->rfind("\"serial\":") : std::string::npos;
    if (at == std::string::npos) {
      ++failures_;
    } else {
      if (w.serial == 0) ++with_map_;
      connect_more();
      w.serial = std::stoull(body->substr(at + 9));
    }
    w.sealed.clear();
    request(w);
    arm(i);
  }

  void arm(size_t i) {
    epoll_event ev{};
    ev.events = ws_[i].out.empty() ? uint32_t(EPOLLIN) : uint32_t(EPOLLIN | EPOLLOUT);
    ev.data.u64 = i;
    epoll_ctl(ep_, EPOLL_CTL_MOD, ws_[i].fd, &ev);
  }

  // read(2), noting when the bytes reached the socket (now when the kernel
  // gives no time).
  ssize_t read_stamped(W& w, char* buf, size_t n) {
    iovec iov{buf, n};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(timespec))];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof ctl;
    ssize_t r = ::recvmsg(w.fd, &mh, 0);
    if (r <= 0) return r;
    w.arrived = std::chrono::system_clock::now();
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
        timespec ts;
        std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
        if (ts.tv_sec != 0)
          w.arrived = std::chrono::system_clock::time_point(
              std::chrono::duration_cast<std::chrono::system_clock::duration>(
                  std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
      }
    return r;
  }

  void loop() {
    std::vector<epoll_event> evs(1024);
    char buf[65536];
    while (!stop_) {
      int n = epoll_wait(ep_, evs.data(), int(evs.size()), to_open_.empty() ? 100 : 0);
      // Answers are timed as they arrive and opened after (a batch per
      // turn, more when idle), but never left so long that the server
      // closes the idle keep-alive connection (5 s).
      for (int k = 0; k < (n == 0 ? 256 : 32) && !to_open_.empty(); ++k) {
        open_map(to_open_.front());
        to_open_.pop_front();
      }
      for (int e = 0; e < n; ++e) {
        size_t i = evs[e].data.u64;
        W& w = ws_[i];
        if (evs[e].events & (EPOLLERR | EPOLLHUP)) {
          reconnect(i);
          continue;
        }
        if (evs[e].events & EPOLLIN) {
          ssize_t r;
          while ((r = read_stamped(w, buf, sizeof buf)) > 0) w.in.append(buf, size_t(r));
          if (r == 0 || (r < 0 && errno != EAGAIN)) {
            reconnect(i);
            continue;
          }
          while (answer(i)) {
          }
        }
        if (!w.out.empty()) {
          ssize_t r = ::write(w.fd, w.out.data(), w.out.size());
          if (r > 0) w.out.erase(0, size_t(r));
        }
        arm(i);
      }
    }
  }

  const std::vector<Server>& servers_;
  std::vector<W> ws_;
  std::deque<size_t> to_open_;
  std::vector<std::vector<double>> latency_, arrival_;
  std::vector<std::atomic<int>> done_;
  std::vector<Clock::time_point> t0_;
  std::vector<std::chrono::system_clock::time_point> t0_wall_;
  std::atomic<int> round_{-1}, failures_{0}, with_map_{0};
  static constexpr size_t kConnecting = 500;
  size_t next_ = 0;  // watchers connected so far: ws_[0, next_)
  std::atomic<bool> stop_{false}, whole_{false};
  int ep_ = -1;
  std::thread thread_;
};

// The real server(s) on the mesh: one on SQLite (STORE empty) or two
// replicas on PostgreSQL. The watchers are spread over the servers (or all
// on the first); a join entering every map on the first server, then
// another on the last one: when does each watcher have its new map. Then
// `joins` joins, 50 at a time, spread over the servers: when is each
// acknowledged. Prints "RESULT KEY VALUE" lines (bench/coord tabulates
// them) besides the human ones.
struct PushOptions {
  Scale scale;
  int joins = 200;
  bool all_on_first = false;
};

int bench_push(const std::string& prog, const std::string& dir, const std::string& store,
               const PushOptions& po) {
  const Scale& sc = po.scale;
  std::vector<SecretKey> wkeys;
  auto w0 = Clock::now();
  if (Status s = write_state(dir, store, sc, wkeys); !s) {
    std::cerr << "bench: " << s.message() << "\n";
    return 1;
  }
  double write_ms = ms(w0, Clock::now());
  int n = store.empty() ? 1 : 2;
  std::vector<Server> servers;
  auto stop_all = [&] {
    for (auto& sv : servers) {
      kill(sv.pid, SIGTERM);
      int st = 0;
      waitpid(sv.pid, &st, 0);
    }
  };
  for (int i = 0; i < n; ++i) {
    auto sv = start_server(prog, dir, store, sc);
    if (!sv) {
      std::cerr << "bench: " << sv.status().message() << "\n";
      stop_all();
      return 1;
    }
    servers.push_back(*sv);
  }
  std::string token(trim_key_text(*read_file(dir + "/admin.token")));
  PublicKey coord = *PublicKey::from_base64(trim_key_text(*read_file(dir + "/coordinator.pub")));
  Log log("bench", std::cerr);
  auto rss = [&] {
    long kb = 0;
    for (auto& sv : servers) kb += rss_kb(sv.pid);
    return kb / 1024.0;
  };
  double rss_idle = rss();

  // Rounds, in this order: an unmeasured join (the watchers' first maps
  // came whole, and connections the start-up burst dropped come back), a
  // join on the first server, one on the last, an announce; then the
  // reference: a join whose push is unmeasured while the watchers switch to
  // whole maps, and a join on the first server pushed as whole maps.
  enum { kWarm, kFirst, kLast, kAnnounce, kSwitch, kWhole, kRounds };
  WatcherFleet fleet(wkeys, servers, coord, kRounds, po.all_on_first);
  fleet.start();
  auto parked = [&] {
    int w = 0;
    for (auto& sv : servers) w += int(metric(sv.url, token, "mesh_coord_watchers"));
    return w;
  };
  auto wait_parked = [&] {
    auto deadline = Clock::now() + std::chrono::seconds(300);
    int w = 0;
    while ((w = parked()) < sc.watchers && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return w;
  };
  auto p0 = Clock::now();
  int watching = wait_parked();
  double park_ms = ms(p0, Clock::now());
  double rss_watch = rss(), rss_first = rss_kb(servers[0].pid) / 1024.0;
  Client admin(servers[0].url, "", log);
  auto sk = admin.admin("POST", "/v1/admin/setup-keys", token,
                        R"({"name": "monitor", "groups": ["mon"], "reusable": true})");
  if (!sk) {
    std::cerr << "bench: " << sk.status().message() << "\n";
    stop_all();
    return 1;
  }
  // The secret alone, as `mesh-coord join` sends it.
  std::string key = parse_setup_key((*sk)["key"].get<std::string>())->secret;
  // CPU of all servers, and of the first (the one every watcher is on with
  // --watch-first): co-located replicas compete for the same cores.
  double put_ms[kRounds] = {}, round_cpu[kRounds] = {}, first_cpu[kRounds] = {}, bytes[kRounds] = {},
         build_ms[kRounds] = {}, db_cpu[kRounds] = {};
  long deltas[kRounds] = {}, maps[kRounds] = {};
  auto cpu = [&] {
    double t = 0;
    for (auto& sv : servers) t += cpu_ms(sv.pid);
    return t;
  };
  auto total = [&](const char* name) {
    double b = 0;
    for (auto& sv : servers) b += metric(sv.url, token, name);
    return b;
  };
  // A join into the monitoring group (it enters every map), written on
  // `server`; round k ends when every watcher has its new map.
  auto push_round = [&](int k, int server) {
    wait_parked();
    double cpu0 = cpu(), first0 = cpu_ms(servers[0].pid), db0 = postgres_cpu_ms();
    double bytes0 = total("mesh_coord_map_bytes_total"), maps0 = total("mesh_coord_maps_served_total"),
           deltas0 = total("mesh_coord_map_deltas_total"),
           build0 = total("mesh_coord_map_build_seconds_total");
    Client writer(servers[server].url, "", log);
    SecretKey mon = SecretKey::generate_private();
    std::string join = dump_json(Json{{"setup_key", key}, {"name", "monitor" + std::to_string(k)}});
    auto a = Clock::now();
    fleet.open_round(k);
    auto r = writer.peer("POST", "/v1/join", mon, coord, join, 120);
    put_ms[k] = ms(a, Clock::now());
    if (!r) std::cerr << "bench: join: " << r.status().message() << "\n";
    auto deadline = Clock::now() + std::chrono::seconds(120);
    while (fleet.done(k) < sc.watchers && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    round_cpu[k] = cpu() - cpu0;
    first_cpu[k] = cpu_ms(servers[0].pid) - first0;
    db_cpu[k] = postgres_cpu_ms() - db0;
    bytes[k] = total("mesh_coord_map_bytes_total") - bytes0;
    maps[k] = long(total("mesh_coord_maps_served_total") - maps0);
    deltas[k] = long(total("mesh_coord_map_deltas_total") - deltas0);
    build_ms[k] = (total("mesh_coord_map_build_seconds_total") - build0) * 1000;
  };
  push_round(kWarm, 0);
  push_round(kFirst, 0);
  push_round(kLast, n - 1);
  // The everyday write: one watcher announces new endpoints (on the last
  // server: another replica's watchers on PostgreSQL), which changes only
  // the maps that hold it (~250). The other watchers should not even wake:
  // the servers' CPU for it is the figure.
  size_t announce_changed = 0;
  long announce_woken = 0;
  {
    wait_parked();
    double cpu0 = cpu();
    long woken0 = long(metric(servers[0].url, token, "mesh_coord_watch_wakeups_total"));
    Client writer(servers[n - 1].url, "", log);
    std::string body = R"({"version": 1, "candidates": [{"endpoint": "198.51.100.7:51820", "kind": "srflx"}]})";
    auto a = Clock::now();
    fleet.open_round(kAnnounce);
    auto r = writer.peer("POST", "/v1/endpoints", wkeys[0], coord, body, 60);
    put_ms[kAnnounce] = ms(a, Clock::now());
    if (!r) std::cerr << "bench: announce: " << r.status().message() << "\n";
    else announce_changed = parse_json(r->body, "announce")->value("maps_changed", size_t(0));
    std::this_thread::sleep_for(std::chrono::seconds(2));
    round_cpu[kAnnounce] = cpu() - cpu0;
    announce_woken = long(metric(servers[0].url, token, "mesh_coord_watch_wakeups_total")) - woken0;
  }
  fleet.whole_maps();
  push_round(kSwitch, 0);
  push_round(kWhole, 0);
  fleet.stop();
  double rss_after = rss();

  // Joins, 50 at a time, alternating servers.
  std::vector<double> acks;
  std::mutex acks_mu;
  std::atomic<int> join_failed{0};
  if (po.joins > 0) {
    auto bulk = admin.admin("POST", "/v1/admin/setup-keys", token,
                            R"({"name": "bulk", "groups": ["mon"], "reusable": true})");
    if (!bulk) join_failed = po.joins;
    std::string bkey = bulk ? parse_setup_key((*bulk)["key"].get<std::string>())->secret : "";
    std::vector<std::thread> js;
    for (int t = 0; t < 50 && bulk; ++t)
      js.emplace_back([&, t] {
        for (int k = t; k < po.joins; k += 50) {
          Client cli(servers[k % n].url, "", log);
          SecretKey me = SecretKey::generate_private();
          std::string body = dump_json(Json{{"setup_key", bkey}, {"name", "j" + std::to_string(k)}});
          auto a = Clock::now();
          auto r = cli.peer("POST", "/v1/join", me, coord, body, 120);
          double d = ms(a, Clock::now());
          if (!r || r->status != 201) {
            ++join_failed;
            continue;
          }
          std::lock_guard lk(acks_mu);
          acks.push_back(d);
        }
      });
    for (auto& t : js) t.join();
  }
  stop_all();

  const char* label = store.empty() ? "sqlite" : "postgres";
  std::printf("store: %s, %d server%s; %d peers, %d watchers%s\n", label, n,
              n > 1 ? "s (replicas)" : "", sc.peers, sc.watchers,
              po.all_on_first && n > 1 ? ", all on the first server" : "");
  std::printf("state written in %.0f ms; server start with %d peers: %.0f ms\n", write_ms, sc.peers,
              servers[0].startup_ms);
  std::printf("watchers parked: %d of %d in %.0f ms (%d reconnects or bad answers)\n", watching,
              sc.watchers, park_ms, fleet.failures());
  int missing = 0;
  for (int k : {kFirst, kLast}) {
    std::vector<double> l = fleet.latencies(k);
    missing += sc.watchers - int(l.size());
    const char* where = k == kFirst ? "first" : "last";
    std::printf("write on the %s server: join acknowledged in %.1f ms; push to %zu watchers: p50 "
                "%.1f ms, p99 %.1f ms, max %.1f ms; server CPU %.0f ms (the first server's %.0f)%s\n",
                where, put_ms[k], l.size(), pct(l, 50), pct(l, 99), pct(l, 100), round_cpu[k],
                first_cpu[k],
                store.empty() ? "" : ("; PostgreSQL's CPU " + std::to_string(long(db_cpu[k])) + " ms").c_str());
    std::vector<double> at = fleet.latencies(k, true);
    std::printf("  arrived at the watchers' sockets: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                pct(at, 50), pct(at, 99), pct(at, 100));
    std::printf("RESULT push_p99_write_on_%s_ms %.1f\n", where, pct(l, 99));
    std::printf("RESULT push_arrived_p99_write_on_%s_ms %.1f\n", where, pct(at, 99));
    std::printf("RESULT pushed_write_on_%s %zu\n", where, l.size());
    std::printf("RESULT join_write_on_%s_ms %.1f\n", where, put_ms[k]);
    std::printf("RESULT server_cpu_write_on_%s_ms %.0f\n", where, round_cpu[k]);
    if (!store.empty()) std::printf("RESULT db_cpu_write_on_%s_ms %.0f\n", where, db_cpu[k]);
    std::printf("  %ld maps sent, %ld of them deltas, %.1f KB per watcher; building them took %.0f ms of CPU\n",
                maps[k], deltas[k], bytes[k] / 1024 / sc.watchers, build_ms[k]);
    std::printf("RESULT push_kb_per_watcher_write_on_%s %.1f\n", where, bytes[k] / 1024 / sc.watchers);
  }
  {
    // The same join pushed as whole maps, in this run: the reference.
    std::vector<double> l = fleet.latencies(kWhole), d = fleet.latencies(kFirst);
    missing += sc.watchers - int(l.size());
    std::printf("reference, the write on the first server pushed as whole maps: p50 %.1f ms, p99 "
                "%.1f ms, max %.1f ms; server CPU %.0f ms; %.1f KB per watcher, deltas %.1f KB "
                "(deltas: p99 %.2fx, CPU %.2fx of whole maps)\n",
                pct(l, 50), pct(l, 99), pct(l, 100), round_cpu[kWhole], bytes[kWhole] / 1024 / sc.watchers,
                bytes[kFirst] / 1024 / sc.watchers, pct(d, 99) / pct(l, 99),
                round_cpu[kFirst] / round_cpu[kWhole]);
    std::printf("RESULT push_p99_whole_maps_ms %.1f\nRESULT server_cpu_whole_maps_ms %.0f\n"
                "RESULT push_kb_per_watcher_whole_maps %.1f\n",
                pct(l, 99), round_cpu[kWhole], bytes[kWhole] / 1024 / sc.watchers);
  }
  {
    std::vector<double> l = fleet.latencies(kAnnounce);
    std::printf("an announce changing %zu maps, acknowledged in %.1f ms: pushed to %zu watchers, "
                "p99 %.1f ms; %ld of %d parked watchers woke on the first server; server CPU in "
                "the 2 s after it %.0f ms\n",
                announce_changed, put_ms[kAnnounce], l.size(), pct(l, 99), announce_woken,
                po.all_on_first ? sc.watchers : sc.watchers / n, round_cpu[kAnnounce]);
    std::printf("RESULT announce_pushed %zu\nRESULT announce_server_cpu_ms %.0f\n", l.size(),
                round_cpu[kAnnounce]);
  }
  if (po.joins > 0) {
    std::printf("joins, 50 concurrent: %zu acknowledged (%d failed), p50 %.1f ms, p99 %.1f ms\n",
                acks.size(), join_failed.load(), pct(acks, 50), pct(acks, 99));
    std::printf("RESULT join_ack_p50_ms %.1f\nRESULT join_ack_p99_ms %.1f\n", pct(acks, 50),
                pct(acks, 99));
  }
  std::printf("server RSS (sum over servers): idle %.1f MB, with %d watchers %.1f MB, after push "
              "%.1f MB\n",
              rss_idle, sc.watchers, rss_watch, rss_after);
  std::printf("RESULT rss_with_watchers_mb %.1f\nRESULT rss_after_push_mb %.1f\n", rss_watch, rss_after);
  std::printf("first server's RSS with its %d watchers: %.1f MB\nRESULT rss_first_server_mb %.1f\n",
              po.all_on_first ? sc.watchers : sc.watchers / n, rss_first, rss_first);
  std::printf("RESULT start_ms %.0f\n", servers[0].startup_ms);
  return missing == 0 && join_failed == 0 ? 0 : 1;
}

int usage() {
  std::cerr << "usage: bench_coord model [--peers N]\n"
               "       bench_coord push MESH_COORD STATE_DIR [POSTGRES_DSN] [--peers N] "
               "[--watchers N] [--joins N] [--watch-first]\n";
  return 64;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  PushOptions po;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto num = [&](int* out) {
      if (i + 1 >= argc) return false;
      *out = std::atoi(argv[++i]);
      return *out >= 0;
    };
    bool ok = true;
    if (a == "--peers") ok = num(&po.scale.peers) && po.scale.peers >= 1000;
    else if (a == "--watchers") ok = num(&po.scale.watchers);
    else if (a == "--joins") ok = num(&po.joins);
    else if (a == "--watch-first") po.all_on_first = true;
    else if (a.rfind("--", 0) == 0) ok = false;
    else pos.push_back(a);
    if (!ok) return usage();
  }
  if (po.scale.watchers > po.scale.peers) return usage();
  if (pos.size() == 1 && pos[0] == "model") return bench_model(po.scale);
  if ((pos.size() == 3 || pos.size() == 4) && pos[0] == "push")
    return bench_push(pos[1], pos[2], pos.size() == 4 ? pos[3] : "", po);
  return usage();
}
