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
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "coord/client.h"
#include "coord/mapjson.h"
#include "coord/model.h"
#include "coord/store.h"
#include "core/file.h"

using namespace mesh;
using namespace mesh::coord;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kPeers = 10000, kGroups = 200, kRules = 500, kWatchers = 1000;

double ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

long rss_kb(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

std::string policy_text(uint32_t seed, int changed_rule = -1, bool monitor = false) {
  std::mt19937 rng(seed);
  Json groups = Json::object();
  for (int g = 0; g < kGroups; ++g) groups["g" + std::to_string(g)] = Json::object();
  Json rules = Json::array();
  for (int r = 0; r < kRules; ++r) {
    Json rule{{"name", "r" + std::to_string(r)},
              {"src", {"g" + std::to_string(rng() % kGroups)}},
              {"dst", {"g" + std::to_string(rng() % kGroups)}}};
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
    // enters all 10,000 maps (the worst case for a push).
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

std::unique_ptr<Peer> synth_peer(Model& m, int i, const PublicKey& key) {
  auto p = std::make_unique<Peer>();
  p->id = m.new_peer_id();
  p->name = "p" + std::to_string(i);
  p->public_key = key;
  p->host_index = *m.allocate_host();
  p->ipv4 = m.host_v4(p->host_index);
  p->ipv6 = m.host_v6(p->host_index);
  p->listen_port = static_cast<uint16_t>(20000 + i % 40000);
  p->groups = {"g" + std::to_string(i % kGroups)};
  p->endpoints = {Candidate{SockAddr{IpAddr::v4(0xC6120000u + static_cast<uint32_t>(i)), 51820}, "srflx"}};
  p->created_at = 1;
  return p;
}

// Routes (issue 19): 20 subnet routes with two routers each, each granted
// to one group by a rule, on the same mesh; the figures above again, as
// ratios to those measured without routes in this run.
void bench_routes(Model& m, double full_ms, double join_ms, double build_ms) {
  auto j = parse_json(policy_text(1, 7), "bench policy");
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
    auto p = synth_peer(m, kPeers + 1000 + i, k);
    auto a = Clock::now();
    m.add_peer(std::move(p), 8);
    joins.push_back(ms(a, Clock::now()));
  }
  std::sort(joins.begin(), joins.end());
  size_t client_bytes = 0, router_bytes = 0;
  double client_ms = serve("p240", &client_bytes);  // group g40: a client of rt0
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

int bench_model() {
  Model m(config());
  m.rebuild(0);
  std::vector<PublicKey> keys;
  for (int i = 0; i < kPeers + 100; ++i) {
    PublicKey k;
    random_bytes(k.bytes.data(), k.bytes.size());
    keys.push_back(k);
  }
  for (int i = 0; i < kPeers; ++i) m.load_peer(synth_peer(m, i, keys[i]));
  Policy pol = parse(policy_text(1));
  auto t0 = Clock::now();
  Changes all = m.set_policy(pol, 1);
  auto t1 = Clock::now();
  std::vector<double> full;
  for (int i = 0; i < 5; ++i) {
    auto a = Clock::now();
    m.set_policy(parse(policy_text(1)), 2);
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
    auto p = synth_peer(m, kPeers + i, keys[kPeers + i]);
    auto a = Clock::now();
    Changes ch = m.add_peer(std::move(p), 3);
    joins.push_back(ms(a, Clock::now()));
    touched += ch.changed.size();
  }
  std::sort(joins.begin(), joins.end());
  // Reference: the same join if every map had to be recomputed.
  auto r0 = Clock::now();
  m.set_policy(parse(policy_text(1)), 4);
  double naive = ms(r0, Clock::now());

  // One policy change: one rule's ports differ.
  Policy changed = parse(policy_text(1, 7));
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
              kPeers, kGroups, kRules, double(visible) / kPeers);
  std::printf("full recompute (policy set, compile + %zu maps): first %.1f ms, median %.1f ms\n",
              all.changed.size(), ms(t0, t1), full[full.size() / 2]);
  std::printf("one join, map work: median %.3f ms, p99 %.3f ms (%.0f maps recomputed per join)\n",
              joins[joins.size() / 2], joins[joins.size() * 99 / 100], double(touched) / 100);
  std::printf("reference, a join recomputing every map: %.1f ms (incremental is %.0fx faster)\n",
              naive, naive / joins[joins.size() / 2]);
  std::printf("one policy change (one rule's ports): %.1f ms, %zu maps changed\n", policy_ms,
              pc.changed.size());
  std::printf("one map to JSON as served (%zu bytes): %.3f ms\n", body.size(), build_ms);
  bench_routes(m, full[full.size() / 2], joins[joins.size() / 2], build_ms);
  std::printf("bench process RSS with the model: %.1f MB\n", rss_kb(getpid()) / 1024.0);
  return 0;
}

// ---------------------------------------------------------------- push

// The synthetic mesh written into STORE (a PostgreSQL DSN), or DIR/coord.db
// when STORE is empty, in one transaction (not logged as a change).
Status write_state(const std::string& dir, const std::string& store,
                   std::vector<SecretKey>& watcher_keys) {
  MESH_TRY(make_dirs(dir, 0700));
  MESH_ASSIGN(auto st, Store::open(store.empty() ? dir + "/coord.db" : store));
  Model m(config());
  MESH_TRY(st->begin());
  MESH_TRY(st->clear());
  for (int i = 0; i < kPeers; ++i) {
    PublicKey pub;
    if (i < kWatchers) {
      watcher_keys.push_back(SecretKey::generate_private());
      pub = watcher_keys.back().public_key();
    } else {
      random_bytes(pub.bytes.data(), pub.bytes.size());
    }
    auto p = synth_peer(m, i, pub);
    MESH_TRY(st->put_peer(p->id, p->name, pub.to_base64(), dump_json(p->to_record())));
    MESH_TRY(st->set_map_serial(p->id, 1, 1));
    m.load_peer(std::move(p));
  }
  MESH_TRY(st->set_meta("schema_version", std::to_string(kSchemaVersion)));
  MESH_TRY(st->set_meta("policy", policy_text(1, -1, true)));
  MESH_TRY(st->set_meta("serial_counter", "1"));
  MESH_TRY(st->set_meta("next_host", std::to_string(kPeers + 1)));
  MESH_TRY(st->set_meta("next_peer_id", std::to_string(kPeers + 1)));
  MESH_TRY(st->set_meta("ipv4_prefix", "100.64.0.0/10"));
  MESH_TRY(st->set_meta("ipv6_prefix", "fd00:b:c::/48"));
  return st->commit();
}

struct Server {
  pid_t pid = 0;
  std::string url;
  double startup_ms = 0;
};

Result<Server> start_server(const std::string& prog, const std::string& dir,
                            const std::string& store) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return io_error("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  std::vector<std::string> args{prog, "serve", "--listen", "127.0.0.1:0", "--state", dir};
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
  const std::string pre = "listening on ";
  if (line.rfind(pre, 0) != 0) {
    kill(sv.pid, SIGTERM);
    return unavailable("server said '" + line + "'");
  }
  sv.url = line.substr(pre.size());
  return sv;
}

int watchers_of(const std::string& url, const std::string& token) {
  std::FILE* f = popen(("curl -s -H 'Authorization: Bearer " + token + "' " + url +
                        "/metrics | sed -n 's/^mesh_coord_watchers //p'")
                           .c_str(),
                       "r");
  char buf[64] = {0};
  if (f) {
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    pclose(f);
  }
  return std::atoi(buf);
}

double pct(std::vector<double> v, int p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() * p / 100)];
}

// The real server(s) on the mesh: one on SQLite (STORE empty) or two
// replicas on PostgreSQL. 1,000 watchers spread over the servers; a join
// entering every map on the first server, then another on the last one:
// when does each watcher have its new map. Then 200 joins, 50 at a time,
// spread over the servers: when is each acknowledged. Prints "RESULT KEY
// VALUE" lines (bench/coord tabulates them) besides the human ones.
int bench_push(const std::string& prog, const std::string& dir, const std::string& store) {
  std::vector<SecretKey> wkeys;
  if (Status s = write_state(dir, store, wkeys); !s) {
    std::cerr << "bench: " << s.message() << "\n";
    return 1;
  }
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
    auto sv = start_server(prog, dir, store);
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
  long rss_idle = 0;
  for (auto& sv : servers) rss_idle += rss_kb(sv.pid);

  constexpr int kRounds = 2;
  std::atomic<int> failed{0};
  std::atomic<int> done[kRounds] = {0, 0};
  std::atomic<int> round{-1};
  std::vector<double> latency[kRounds];
  for (auto& l : latency) l.assign(kWatchers, -1);
  Clock::time_point t0[kRounds];
  std::mutex t0_mu;
  std::vector<std::thread> ws;
  for (int i = 0; i < kWatchers; ++i) {
    ws.emplace_back([&, i] {
      Client cli(servers[i % n].url, "", log);
      uint64_t serial = 0;
      // First fetch: the current map (retry: a burst of 1,000 connects).
      for (int tries = 0; tries < 50; ++tries) {
        auto r = cli.peer("GET", "/v1/map", wkeys[i], coord, "", 60);
        if (!r && i % 100 == 0) std::cerr << "watcher " << i << ": " << r.status().message() << "\n";
        if (r) {
          serial = parse_json(r->body, "map")->at("serial").get<uint64_t>();
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (serial == 0) {
        ++failed;
        return;
      }
      for (int k = 0; k < kRounds; ++k) {
        bool got = false;
        for (int tries = 0; tries < 5 && !got; ++tries) {
          auto r = cli.peer("GET", "/v1/map?since=" + std::to_string(serial) + "&wait=90",
                            wkeys[i], coord, "", 120);
          auto now = Clock::now();
          if (r && r->status == 200) {
            std::lock_guard lk(t0_mu);
            latency[k][i] = ms(t0[k], now);
            serial = parse_json(r->body, "map")->at("serial").get<uint64_t>();
            ++done[k];
            got = true;
          } else if (round < k) {
            --tries;  // a 204 before the change: poll again
          }
        }
        if (!got) {
          ++failed;
          return;
        }
      }
    });
  }
  auto parked = [&] {
    int w = 0;
    for (auto& sv : servers) w += watchers_of(sv.url, token);
    return w;
  };
  auto wait_parked = [&] {
    auto deadline = Clock::now() + std::chrono::seconds(120);
    int w = 0;
    while ((w = parked()) < kWatchers - failed && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return w;
  };
  int watching = wait_parked();
  long rss_watch = 0;
  for (auto& sv : servers) rss_watch += rss_kb(sv.pid);
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
  double put_ms[kRounds] = {0, 0};
  for (int k = 0; k < kRounds; ++k) {
    if (k > 0) {
      auto deadline = Clock::now() + std::chrono::seconds(60);
      while (done[k - 1] < kWatchers - failed && Clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      wait_parked();
    }
    Client writer(servers[k % n == 0 ? 0 : n - 1].url, "", log);
    SecretKey mon = SecretKey::generate_private();
    std::string join = dump_json(Json{{"setup_key", key}, {"name", "monitor" + std::to_string(k)}});
    {
      std::lock_guard lk(t0_mu);
      t0[k] = Clock::now();
      round = k;
    }
    auto r = writer.peer("POST", "/v1/join", mon, coord, join, 60);
    put_ms[k] = ms(t0[k], Clock::now());
    if (!r) std::cerr << "bench: join: " << r.status().message() << "\n";
  }
  for (auto& t : ws) t.join();
  long rss_after = 0;
  for (auto& sv : servers) rss_after += rss_kb(sv.pid);

  // Joins, 50 at a time, 4 each, alternating servers.
  auto bulk = admin.admin("POST", "/v1/admin/setup-keys", token,
                          R"({"name": "bulk", "groups": ["mon"], "reusable": true})");
  std::vector<double> acks;
  std::mutex acks_mu;
  std::atomic<int> join_failed{0};
  if (bulk) {
    std::string bkey = parse_setup_key((*bulk)["key"].get<std::string>())->secret;
    std::vector<std::thread> js;
    for (int t = 0; t < 50; ++t)
      js.emplace_back([&, t] {
        for (int k = 0; k < 4; ++k) {
          Client cli(servers[(t + k) % n].url, "", log);
          SecretKey me = SecretKey::generate_private();
          std::string body =
              dump_json(Json{{"setup_key", bkey}, {"name", "j" + std::to_string(t * 4 + k)}});
          auto a = Clock::now();
          auto r = cli.peer("POST", "/v1/join", me, coord, body, 60);
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
  std::printf("store: %s, %d server%s\n", label, n, n > 1 ? "s (replicas)" : "");
  std::printf("server start with %d peers: %.0f ms\n", kPeers, servers[0].startup_ms);
  std::printf("watchers parked: %d of %d (failed %d)\n", watching, kWatchers, failed.load());
  for (int k = 0; k < kRounds; ++k) {
    std::vector<double> l;
    for (double x : latency[k])
      if (x >= 0) l.push_back(x);
    const char* where = k == 0 ? "first" : "last";
    std::printf("write on the %s server: join acknowledged in %.1f ms; push to %zu watchers: p50 "
                "%.1f ms, p99 %.1f ms, max %.1f ms\n",
                where, put_ms[k], l.size(), pct(l, 50), pct(l, 99), pct(l, 100));
    std::printf("RESULT push_p99_write_on_%s_ms %.1f\n", where, pct(l, 99));
    std::printf("RESULT pushed_write_on_%s %zu\n", where, l.size());
  }
  std::printf("joins, 50 concurrent: %zu acknowledged (%d failed), p50 %.1f ms, p99 %.1f ms\n",
              acks.size(), join_failed.load(), pct(acks, 50), pct(acks, 99));
  std::printf("RESULT join_ack_p50_ms %.1f\nRESULT join_ack_p99_ms %.1f\n", pct(acks, 50),
              pct(acks, 99));
  std::printf("server RSS (sum over servers): idle %.1f MB, with %d watchers %.1f MB, after push "
              "%.1f MB\n",
              rss_idle / 1024.0, kWatchers, rss_watch / 1024.0, rss_after / 1024.0);
  std::printf("RESULT rss_with_watchers_mb %.1f\n", rss_watch / 1024.0);
  std::printf("RESULT start_ms %.0f\n", servers[0].startup_ms);
  return failed == 0 && join_failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "model") return bench_model();
  if (mode == "push" && (argc == 4 || argc == 5))
    return bench_push(argv[2], argv[3], argc == 5 ? argv[4] : "");
  std::cerr << "usage: bench_coord model | push MESH_COORD STATE_DIR [POSTGRES_DSN]\n";
  return 64;
}
