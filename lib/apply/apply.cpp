#include "apply/apply.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>

#include "apply/exitnode.h"
#include "apply/hosts.h"
#include "apply/memo.h"
#include "apply/nft.h"
#include "apply/routing.h"
#include "apply/rtnl.h"
#include "apply/uapi.h"
#include "core/file.h"
#include "netmap/endpoints.h"
#include "netmap/fast.h"

namespace mesh::apply {

Status check_interface_name(const std::string& name) {
  if (name.empty() || name.size() > 15)
    return usage_error("invalid interface name '" + name + "': 1 to 15 characters");
  for (unsigned char c : name)
    if (c <= ' ' || c == '/' || c == ':' || c >= 0x7f)
      return usage_error("invalid interface name '" + name + "'");
  if (name == "." || name == "..") return usage_error("invalid interface name '" + name + "'");
  return Status::ok();
}

bool have_net_admin() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      unsigned long long caps = std::stoull(line.substr(7), nullptr, 16);
      return caps & (1ull << 12);  // CAP_NET_ADMIN
    }
  }
  return geteuid() == 0;
}

namespace {

struct Observed {
  Current cur;
  std::optional<LinkInfo> link;
  // cur.device was not read: the memo's snapshot stands in for it
  // (memo.h); fill it with device_from_snapshot() once the map is parsed.
  bool device_from_memo = false;
};

// `memo` (may be null) lets the WireGuard dump be skipped when its
// snapshot is trusted for this very interface.
Result<Observed> observe(const std::string& ifname, WgBackend& wg, Rtnl& rt,
                         const std::string& table, bool need_firewall, std::string* fw_warning,
                         const Memo* memo, const BackendEnv& env) {
  Observed o;
  MESH_ASSIGN(o.link, rt.get_link(ifname));
  MESH_ASSIGN(bool wg_exists, wg.exists());
  if (o.link && !wg_exists)
    return Status(Exit::Config, "interface " + ifname + " exists but is not a WireGuard device served by the " +
                                    wg.name() + " backend");
  if (!o.link && wg_exists)
    return Status(Exit::Config, "the " + std::string(wg.name()) + " backend serves " + ifname +
                                    " but the link is missing");
  if (o.link) {
    o.cur.link.exists = true;
    o.cur.link.mtu = o.link->mtu;
    o.cur.link.up = o.link->up;
    MESH_ASSIGN(o.cur.link.addresses, rt.addresses(o.link->ifindex));
    MESH_ASSIGN(o.cur.link.routes, rt.routes(o.link->ifindex));
    if (memo && snapshot_trusted(*memo, wg.name(), o.link->ifindex, env.now(), env.verify_interval))
      o.device_from_memo = true;
    else {
      MESH_ASSIGN(o.cur.device, wg.get());
    }
  }
  if (need_firewall) {
    auto d = firewall_current_digest(table);
    if (d)
      o.cur.firewall_digest = *d;
    else if (fw_warning)
      *fw_warning = d.status().message();  // read-only runs: report, carry on
    else
      return d.status();
  }
  return o;
}

// Everything observed about the interface, with the handles to change it.
struct Session {
  std::unique_ptr<WgBackend> wg;
  std::optional<Rtnl> rt;
  Observed obs;
  std::string fw_warning;
};

Result<Session> open_session(const ApplyOptions& opt, const BackendEnv& env,
                             const std::string& table, const Memo* memo) {
  Session s;
  MESH_ASSIGN(s.wg, choose_backend(opt.backend, opt.interface, env));
  MESH_ASSIGN(Rtnl rt, Rtnl::open());
  s.rt.emplace(std::move(rt));
  bool read_only = opt.dry_run || opt.print_conf;
  MESH_ASSIGN(s.obs, observe(opt.interface, *s.wg, *s.rt, table, !opt.print_conf,
                             read_only ? &s.fw_warning : nullptr, memo, env));
  return s;
}

// Socket buffers (sockbuf.h): an improvement, never a reason to fail the
// run, so a refusal is a warning.
void size_daemon_sockets(WgBackend& wg, const ApplyOptions& opt, int wait_ms, const Log& log) {
  if (opt.socket_buffer <= 0) return;
  auto n = wg.size_sockets(opt.socket_buffer, wait_ms);
  if (!n)
    log.warn("socket buffers of " + opt.interface + "'s daemon left as they are: " + n.status().message());
  else if (n->sockets == 0 && std::string(wg.name()) == "userspace")
    log.warn("socket buffers of " + opt.interface + "'s daemon: it has no UDP socket yet");
}

// A SET written to a pristine device (a daemon just started: no key, no
// peers, link down) while the map is still being read. wireguard-go takes
// some 0.1 ms per new peer (an X25519 and its allocations), so it starts on
// the first peers while the rest are parsed and validated, instead of after.
// Until finish(), the destructor puts the device back as it found it: no
// peers, no key, its own listen port. The link stays down throughout, so
// nothing is sent or accepted meanwhile.
//
// The listen port goes first, with the key, as wg(8) sends it: wireguard-go
// (0.0.20220316) takes some 2-3 ms over a listen_port line on a device with
// 5,000 peers even while down, and 6-14 ms right after adding them (a
// second SET, measured with MESH_LOG=debug laps), against under 0.5 ms
// before any. `port` is --listen-port or a guess at the map's
// (guess_listen_port); finish() corrects a wrong guess.
class EarlySet {
 public:
  EarlySet(std::unique_ptr<WgBackend> wg, std::unique_ptr<SetStream> stream, const SecretKey& key,
           std::optional<uint16_t> port, uint16_t original_port, EndpointsDoc eps,
           const std::string& interface, const Log& log)
      : wg_(std::move(wg)), stream_(std::move(stream)), key_(key), port_(port),
        original_port_(original_port), eps_(std::move(eps)), interface_(interface), log_(log) {
    DeviceUpdate head;
    head.private_key = key;
    head.listen_port = port;
    std::string lines = uapi_encode_device(head);
    stream_->append(lines);
    wipe(lines);
  }
  EarlySet(const EarlySet&) = delete;
  EarlySet& operator=(const EarlySet&) = delete;

  ~EarlySet() {
    if (finished_) return;
    Status s = stream_->finish();
    DeviceUpdate none, nokey;
    none.replace_peers = true;
    nokey.private_key = SecretKey();  // all zero: no key
    if (port_ && *port_ != original_port_) nokey.listen_port = original_port_;  // cheap once peerless
    if (s) s = wg_->set(none);
    if (s) s = wg_->set(nokey);
    if (!s) log_.warn("could not undo the SET begun on " + interface_ + ": " + s.message());
    wipe(lines_);
  }

  // The parser's hook: one more peer for the device.
  void peer(const MapPeer& mp) {
    PeerUpdate u = peer_addition(desired_peer(mp, eps_));
    size_t at = lines_.size();
    uapi_append_peer(&lines_, u);
    blocks_.push_back({u.public_key, at, lines_.size() - at});
    if (blocks_.size() % 256 == 0) flush();  // some 40 KB: a few sends per socket buffer
  }

  void flush() {
    if (sent_ < lines_.size()) stream_->append(lines_.substr(sent_));
    sent_ = lines_.size();
  }

  // Whether what was streamed is the plan's SET for the pristine device:
  // the same key, every change an addition, one per streamed peer, each
  // encoded exactly as it was sent. Compared peer by peer in the plan's
  // order (by key) through one small buffer, before the plan's peers move
  // on: a whole copy of the SET (device_update(), then its encoding) would
  // be megabytes of fresh pages, faulted in beside a daemon busy on both
  // cores. Differs for a map the fast parser left to the full one, whose
  // peers it saw only in part.
  bool matches(const Plan& plan, const SecretKey& key) {
    flush();
    if (!plan.set_private_key || !secure_equal(key_view(key), key_view(key_)) ||
        plan.peers.size() != blocks_.size())
      return false;
    std::sort(blocks_.begin(), blocks_.end(), [](const Block& a, const Block& b) { return a.key < b.key; });
    std::string one;
    std::string_view sent = lines_;
    bool same = true;
    for (size_t i = 0; same && i < plan.peers.size(); ++i) {
      const PeerChange& c = plan.peers[i];
      same = c.kind == PeerChange::Kind::Add;
      if (!same) break;
      one.clear();
      uapi_append_peer(&one, peer_update(c));
      same = sent.substr(blocks_[i].at, blocks_[i].len) == one;
    }
    wipe(one);
    return same;
  }

  // Ends the streamed SET in place of wg.set(u). `same` is matches()'s
  // answer; `u` is the plan's SET, of which only the listen port counts
  // when the stream matched (a wrong guess is corrected). Otherwise `u` is
  // sent whole, replacing the streamed peers.
  Status finish(bool same, const DeviceUpdate& u) {
    wipe(lines_);
    finished_ = true;
    MESH_TRY(stream_->finish());
    // The port the device must end with (u has one only where it differs
    // from the device's own), and the one it has now.
    uint16_t want_port = u.listen_port.value_or(original_port_);
    uint16_t has_port = port_.value_or(original_port_);
    if (same) {
      DeviceUpdate rest;
      rest.fwmark = u.fwmark;
      if (want_port != has_port) {
        log_.debug("the listen port sent with the key was a wrong guess; setting " + std::to_string(want_port));
        rest.listen_port = want_port;
      }
      if (rest.empty()) return Status::ok();
      return wg_->set(rest);
    }
    log_.debug("the SET streamed during the parse is not the plan's; sending the plan's whole");
    DeviceUpdate whole = u;
    whole.replace_peers = true;
    if (want_port != has_port) whole.listen_port = want_port;
    return wg_->set(whole);
  }

 private:
  struct Block {
    PublicKey key;
    size_t at, len;  // in lines_
  };
  static std::string_view key_view(const SecretKey& k) {
    return {reinterpret_cast<const char*>(k.bytes().data()), kKeyLen};
  }

  std::unique_ptr<WgBackend> wg_;
  std::unique_ptr<SetStream> stream_;
  SecretKey key_;
  std::optional<uint16_t> port_;  // sent with the key
  uint16_t original_port_;        // the device's before
  EndpointsDoc eps_;
  const std::string& interface_;
  const Log& log_;
  std::string lines_;  // every peer's lines so far
  size_t sent_ = 0;
  std::vector<Block> blocks_;
  bool finished_ = false;
};

std::unique_ptr<EarlySet> start_early_set(const ApplyOptions& opt, const BackendEnv& env, const SecretKey& key,
                                          std::string_view map_text, uint16_t device_port,
                                          const std::vector<std::string>& eps_texts, const ParseOptions& po,
                                          const Log& log) {
  // Endpoints documents first: the peers' endpoints depend on them. Any
  // trouble with one, and the ordinary path reports it in its turn.
  std::vector<EndpointsDoc> docs;
  for (size_t i = 0; i < eps_texts.size(); ++i) {
    auto j = parse_json(eps_texts[i], opt.endpoints_files[i]);
    if (!j) return nullptr;
    auto d = parse_endpoints(*j, opt.endpoints_files[i], po);
    if (!d) return nullptr;
    docs.push_back(std::move(*d));
  }
  auto wg = make_userspace_backend(opt.interface, env);
  auto stream = wg->open_set_stream();
  if (!stream) return nullptr;
  remove_memo(env.state_dir, opt.interface);  // the device is touched from here on
  // The port desired_from_map() will choose: --listen-port, else the map's.
  std::optional<uint16_t> port =
      opt.listen_port && *opt.listen_port ? opt.listen_port : guess_listen_port(map_text);
  return std::make_unique<EarlySet>(std::move(wg), std::move(stream), key, port, device_port,
                                    merge_endpoints(docs), opt.interface, log);
}

// Whether an observation shows a pristine device that an EarlySet may
// write to.
bool pristine(const Result<Session>& s) {
  if (!s || std::string(s->wg->name()) != "userspace") return false;
  const Observed& o = s->obs;
  return o.link && !o.link->up && !o.device_from_memo && !o.cur.device.private_key &&
         o.cur.device.peers.empty();
}

}  // namespace

Result<std::string> run_apply(const ApplyOptions& opt, const BackendEnv& env, const Log& log) {
  MESH_TRY(check_interface_name(opt.interface));
  auto t0 = std::chrono::steady_clock::now();
  auto lap = [&](const char* what) {
    if (log.level() < LogLevel::Debug) return;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - t0).count();
    log.debug(std::string(what) + " at " + std::to_string(us / 1000.0) + " ms");
  };
  const std::string table_name = firewall_table_name(opt.interface);
  UniqueFd lock;
  if (!opt.dry_run && !opt.print_conf && have_net_admin())
    lock = lock_interface(env.state_dir, opt.interface);
  std::optional<Memo> memo;
  if (!opt.print_conf) memo = load_memo(memo_path(env.state_dir, opt.interface));
  // Only a run that changes things may trust the memo's snapshot of the
  // device: --dry-run shows what is really there.
  const Memo* trust = memo && !opt.dry_run && !opt.verify ? &*memo : nullptr;
  // Observing the interface (a UAPI/netlink dump of every peer) needs only
  // its name: do it while the inputs are parsed. It is read-only, so bad
  // input still leaves everything as it was.
  auto observed = std::async(std::launch::async,
                             [&] { return open_session(opt, env, table_name, trust); });

  // 1. Every input, validated before anything is touched. The exact bytes
  // also make the memo key (memo.h).
  std::string warning;
  MESH_ASSIGN(SecretKey key, read_private_key_file(opt.key_file, &warning));
  if (!warning.empty()) log.warn(warning);
  InputDigest inputs;
  {
    MESH_ASSIGN(std::string key_text, read_file(opt.key_file, 4096));
    inputs.add("key", key_text);
    wipe(key_text);
  }
  inputs.add("interface", opt.interface);
  inputs.add("backend", opt.backend);
  inputs.add("strict", opt.strict ? "1" : "0");
  inputs.add("port", opt.listen_port ? std::to_string(*opt.listen_port) : "");
  inputs.add("hosts", opt.hosts_file);
  {
    std::string exit = opt.exit_node + (opt.exit_block_lan ? " block-lan" : "");
    for (const auto& b : opt.exit_bypass) exit += " " + b.to_string();
    inputs.add("exit", exit);
  }
  ParseOptions po{opt.strict};
  const std::string map_source = opt.map_file == "-" ? "<stdin>" : opt.map_file;
  MESH_ASSIGN(std::string map_text, read_file(opt.map_file));
  std::vector<std::string> eps_texts;
  for (const auto& f : opt.endpoints_files) {
    MESH_ASSIGN(std::string t, read_file(f));
    eps_texts.push_back(std::move(t));
  }
  // Hashing the map (a megabyte at 5,000 peers) is only urgent when a memo
  // waits to be compared with it; otherwise it runs beside the parse and is
  // collected when the memo is written.
  auto hash_inputs = [&map_text, &eps_texts](InputDigest d) {
    d.add("map", map_text);
    for (const auto& t : eps_texts) d.add("endpoints", t);
    return d.hex();
  };
  std::shared_future<std::string> input_digest =
      std::async(memo ? std::launch::deferred : std::launch::async, hash_inputs, std::move(inputs)).share();
  lap("inputs read");

  bool read_only = opt.dry_run || opt.print_conf;
  if (!read_only && !have_net_admin())
    return no_permission("configuring " + opt.interface + " needs root (CAP_NET_ADMIN)");

  // The fast path: byte-identical inputs and the very state the last run
  // left mean diff() is empty (memo.h explains why this is sound).
  if (memo && memo->inputs == input_digest.get()) {
    MESH_ASSIGN(Session session, observed.get());
    bool same = session.obs.device_from_memo
                    ? !memo->link.empty() && link_digest(session.obs.cur) == memo->link
                    : state_digest(session.obs.cur) == memo->state;
    // The hosts file is anyone's to edit: its block is read every time.
    size_t hosts_names = 0;
    if (same && !opt.hosts_file.empty() && !opt.print_conf) {
      auto block = read_hosts_block(opt.hosts_file, opt.interface);
      same = block && hosts_digest(*block) == memo->hosts;  // else the full path repairs or reports it
      if (same) hosts_names = hosts_block_names(*block);
    }
    if (same) {
      lap(session.obs.device_from_memo ? "no-op confirmed from the memo (device snapshot trusted)"
                                       : "no-op confirmed from the memo");
      if (!session.obs.device_from_memo && !opt.dry_run && session.obs.link) {
        // The device was read in full and matches: the snapshot is verified.
        Memo next = *memo;
        next.verified_at = env.now();
        next.ifindex = session.obs.link->ifindex;
        next.backend = session.wg->name();
        next.device_text = serialise_snapshot(session.obs.cur.device);
        store_memo(env.state_dir, opt.interface, next);
        size_daemon_sockets(*session.wg, opt, 0, log);
      }
      Plan none;
      none.peers_unchanged = memo->peers;
      if (!opt.print_conf) none.hosts_file = opt.hosts_file;
      none.hosts_names = hosts_names;
      return plan_json_text(none, opt.interface, session.wg->name(), "inet " + table_name,
                            opt.dry_run) + "\n";
    }
    // Something changed: take the full path, reusing this observation.
    observed = std::async(std::launch::deferred,
                          [s = std::make_shared<Session>(std::move(session))]() mutable -> Result<Session> {
                            return std::move(*s);
                          });
  }

  // A pristine device gets its SET while the map is read (EarlySet). The
  // observation decides; one that is not back at once is of a device with
  // peers to read, which is not pristine anyway.
  std::unique_ptr<EarlySet> early;
  if (!read_only && !memo &&
      observed.wait_for(std::chrono::milliseconds(10)) == std::future_status::ready) {
    auto seen = std::make_shared<Result<Session>>(observed.get());
    if (pristine(*seen))
      early = start_early_set(opt, env, key, map_text, (*seen)->obs.cur.device.listen_port, eps_texts, po, log);
    observed = std::async(std::launch::deferred, [seen]() mutable { return std::move(*seen); });
    if (early) lap("SET begun on the pristine device");
  }

  // Straight from the text (netmap/fast.h); the same validation and errors
  // as parse_json() + parse_netmap().
  PeerHook hook;
  if (early) hook = [&early](const MapPeer& p) { early->peer(p); };
  MESH_ASSIGN(NetMap map, parse_netmap_text(map_text, map_source, po, hook));
  if (early) early->flush();
  lap("map parsed");
  std::vector<EndpointsDoc> docs;
  for (size_t i = 0; i < eps_texts.size(); ++i) {
    MESH_ASSIGN(Json j, parse_json(eps_texts[i], opt.endpoints_files[i]));
    MESH_ASSIGN(auto d, parse_endpoints(j, opt.endpoints_files[i], po));
    docs.push_back(std::move(d));
  }
  EndpointsDoc eps = merge_endpoints(docs);
  // Exit node bypass: the map's TURN and STUN servers keep the real
  // uplink, as do the prefixes given (the coordinator's).
  std::vector<Prefix> bypass = opt.exit_bypass;
  if (!opt.exit_node.empty()) {
    std::vector<std::string> servers = map.stun;
    for (const auto& t : map.turn) servers.push_back(t.server);
    for (const auto& s : servers) {
      auto sa = SockAddr::parse(s);
      if (sa)
        bypass.push_back(Prefix{sa->ip, sa->ip.is_v4() ? 32 : 128});
      else
        log.warn("exit node: server " + s + " is not an address; its traffic is not kept off the exit node");
    }
  }
  std::vector<Prefix> masquerade;
  for (const auto& r : map.self.routes)
    if (r.masquerade) masquerade.push_back(r.network);
  FirewallScript fw = firewall_script(opt.interface, map.inbound, map.forward, masquerade);
  // The hosts file's block: the names go before the peers move on, and a
  // damaged block is refused before anything is touched.
  const bool manage_hosts = !opt.hosts_file.empty() && !opt.print_conf;
  std::string hosts_text;
  HostsSync hosts_check;
  if (manage_hosts) {
    std::vector<std::string> warnings;
    hosts_text = hosts_block(opt.interface, hosts_entries(map, &warnings));
    for (const auto& w : warnings) log.warn(w);
    MESH_ASSIGN(hosts_check, sync_hosts_file(opt.hosts_file, opt.interface, hosts_text, true, ""));
  }
  // The map's peers are not needed again: their lists move into `want`.
  MESH_ASSIGN(Desired want, desired_from_map(std::move(map), key, eps, opt.listen_port));
  want.firewall_digest = fw.digest;
  want.firewall_rules = map.inbound.size();
  lap("desired state and firewall compiled");

  // 2. What is there now.
  MESH_ASSIGN(Session session, observed.get());
  lap("interface observed");
  if (!session.fw_warning.empty()) log.warn(session.fw_warning);
  WgBackend& wg = *session.wg;
  Rtnl& rt = *session.rt;
  Observed& obs = session.obs;
  if (obs.device_from_memo) {
    auto snap = parse_snapshot(memo->device_text);
    if (snap) {
      obs.cur.device = device_from_snapshot(std::move(*snap), want);
    } else {
      log.debug("memo snapshot unreadable (" + snap.status().message() + "); reading the device");
      obs.device_from_memo = false;
      MESH_ASSIGN(obs.cur.device, wg.get());
    }
    lap("device taken from the memo snapshot");
  }
  // Routes through peers (issue 19): the router per network, given who
  // holds it now; the forwarding sysctls a routing peer needs.
  choose_routes(&want, obs.cur.device);
  MESH_TRY(use_exit_node(&want, opt.exit_node, opt.exit_block_lan, std::move(bypass)));
  std::vector<RoutedNetwork> route_tab = route_table(want);
  if (opt.print_conf) return wg_quick_conf(want, obs.cur);
  obs.cur.saved_sysctls = load_saved_sysctls(env.state_dir, opt.interface);
  if (!want.forwarding.empty()) obs.cur.sysctls = read_sysctls(want.forwarding);
  {
    auto ex = read_exit_state(!opt.exit_node.empty());
    if (ex)
      obs.cur.exit = std::move(*ex);
    else if (!opt.exit_node.empty())
      return ex.status();  // without it, no exit node: the leak would be silent
  }
  if (obs.link) obs.cur.ifindex = obs.link->ifindex;
  Current sysctl_view;  // obs.cur moves on below
  sysctl_view.sysctls = obs.cur.sysctls;
  sysctl_view.saved_sysctls = obs.cur.saved_sysctls;
  sysctl_view.exit = obs.cur.exit;

  // The firewall table (an nft(8) run) does not depend on the WireGuard
  // device. On an interface that exists, install it now, beside the plan,
  // while the daemon is idle: beside the SET, it would take CPU from a
  // daemon busy on both cores. Every input is validated by now. (A new
  // interface gets its table once it exists, below.)
  std::future<Status> fw_installed;
  if (!opt.dry_run && obs.cur.link.exists && obs.cur.firewall_digest != want.firewall_digest) {
    remove_memo(env.state_dir, opt.interface);  // something is touched from here on
    fw_installed = std::async(std::launch::async, [&fw] { return firewall_install(fw); });
  }

  // 3. The plan.
  Plan plan = diff(want, obs.cur);
  if (manage_hosts) {
    plan.hosts_file = opt.hosts_file;
    plan.hosts_changed = hosts_check.changed;
    plan.hosts_names = hosts_check.names;
  }
  lap("plan computed");
  std::string table = "inet " + fw.table;
  if (opt.dry_run) return plan_json_text(plan, opt.interface, wg.name(), table, true) + "\n";
  Current after = expected_state(want, obs.cur);
  Memo next{"", "", want.peers.size()};
  next.backend = wg.name();
  if (manage_hosts) next.hosts = hosts_digest(hosts_text);
  next.verified_at = obs.device_from_memo ? memo->verified_at : env.now();
  // A run that fails midway must not leave a snapshot of the old state
  // behind (it would be trusted next time): drop it before touching anything.
  if (plan.changed()) remove_memo(env.state_dir, opt.interface);

  // 4. Carry it out. The firewall goes in before the link comes up, so a
  // new interface is never reachable without it.
  if (plan.create_interface) {
    MESH_TRY(wg.create());
    MESH_ASSIGN(obs.link, rt.get_link(opt.interface));
    if (!obs.link) return io_error("interface " + opt.interface + " vanished after creation");
    // A fresh wireguard-go TUN starts with its own MTU and down; re-read
    // so the plan's link part stays minimal.
    plan.set_mtu = obs.link->mtu != want.mtu ? std::optional<int>(want.mtu) : std::nullopt;
    plan.set_up = !obs.link->up;
  }
  int ifindex = obs.link->ifindex;
  next.ifindex = ifindex;
  // The exit node's table route names the interface: known from here on.
  ExitState exit_cur = sysctl_view.exit;
  plan.exit = exit_diff(exit_state_for(want.exit, ifindex), exit_cur);
  // Turning the exit node off: the socket keeps its mark until the rules
  // that exempt it are gone.
  std::optional<uint32_t> clear_fwmark;
  if (plan.set_fwmark && *plan.set_fwmark == 0) clear_fwmark = 0;
  // The SET: on the pristine path streamed already, and only built when
  // the stream turns out not to be the plan's (EarlySet::matches).
  bool streamed = early && early->matches(plan, want.private_key);
  DeviceUpdate update;
  if (streamed) {
    update.listen_port = plan.set_listen_port;
    update.fwmark = plan.set_fwmark;
  } else {
    update = device_update(plan, want);
  }
  if (clear_fwmark) update.fwmark.reset();
  // While the device takes the SET (the run mostly waits on it), another
  // thread digests and serialises the state to remember and writes it to a
  // file that stays invisible until commit() (PendingFile), writes the
  // summary (the plan is final now; only a failure replaces it) and frees
  // the per-peer structures nothing needs any more. Done after the SET,
  // this was some 5 ms of a 5,000-peer apply (MESH_LOG=debug laps); the
  // memo file alone 1.2-1.5 ms, after the link came up, beside a daemon
  // starting every peer on both cores.
  struct Background {
    std::optional<PendingFile> memo;
    std::string summary;
  };
  std::vector<PeerChange> peer_changes = std::move(plan.peers);  // the rest stays here
  auto background = std::async(
      std::launch::async,
      [after = std::move(after), peer_changes = std::move(peer_changes), plan_view = plan,
       want = std::move(want), cur = std::move(obs.cur), memo = std::move(next), input_digest,
       name = opt.interface, backend = std::string(wg.name()), &table, &env]() mutable {
        // Moved into locals: a capture would be destroyed with the shared
        // state, by whichever thread releases the future last.
        Current done_after = std::move(after);
        Desired done_want = std::move(want);
        Current done_cur = std::move(cur);
        Memo m = std::move(memo);
        Background b;
        m.inputs = input_digest.get();
        m.state = state_digest(done_after);
        m.link = link_digest(done_after);
        m.device_text = serialise_snapshot(done_after.device);
        if (auto f = prepare_memo(env.state_dir, m)) b.memo.emplace(std::move(*f));
        plan_view.peers = std::move(peer_changes);
        b.summary = plan_json_text(plan_view, name, backend, table, false) + "\n";
        Plan done_plan = std::move(plan_view);
        return b;
      });
  // A new interface's table goes in while the device digests the SET. Both
  // are done before the link comes up or the memo is written.
  if (plan.firewall && !fw_installed.valid())
    fw_installed = std::async(std::launch::async, [&fw] { return firewall_install(fw); });
  // A link that is down (and comes up below) carries nothing yet, so its
  // addresses can go on while the device takes the SET; on an up link they
  // wait for the peers, as before. Every input is validated by now.
  std::future<Status> addressed;
  if (plan.set_up)
    addressed = std::async(std::launch::async, [&] {
      return rt.change_addresses(ifindex, plan.addresses_add, plan.addresses_del);
    });
  Status set = early ? early->finish(streamed, update) : wg.set(update);
  lap("WireGuard device set");
  Status fw_status = plan.firewall ? fw_installed.get() : Status::ok();
  Status addr_status = addressed.valid() ? addressed.get() : Status::ok();
  // The SET's own copy (none when streamed) goes the same way as the rest,
  // off this thread.
  std::future<void> freed;
  if (!update.peers.empty())
    freed = std::async(std::launch::async, [u = std::move(update)]() mutable {
      DeviceUpdate done = std::move(u);
    });
  MESH_TRY(set);
  MESH_TRY(fw_status);
  MESH_TRY(addr_status);
  lap("firewall installed");
  // The memo goes in place now, before the link comes up: then the daemon
  // starts every peer on both cores. What follows (addresses, link, routes)
  // is observed on every run and is part of the memo's link digest, so a
  // failure from here on only sends the next run down the full path.
  Background done = background.get();
  if (done.memo) (void)done.memo->commit(memo_path(env.state_dir, opt.interface));
  lap("memo stored");
  if (!addressed.valid())
    MESH_TRY(rt.change_addresses(ifindex, plan.addresses_add, plan.addresses_del));
  if (plan.set_mtu || plan.set_up) MESH_TRY(rt.set_link(ifindex, plan.set_mtu, true));
  MESH_TRY(rt.change_routes(ifindex, plan.routes_add, plan.routes_del));
  // Forwarding last: the firewall's forward chain is in place by now.
  MESH_TRY(apply_sysctls(env.state_dir, opt.interface, plan, sysctl_view));
  MESH_TRY(change_exit_state(plan.exit));
  if (clear_fwmark) {
    DeviceUpdate unmark;
    unmark.fwmark = 0;
    MESH_TRY(wg.set(unmark));
  }
  MESH_TRY(store_route_table(env.state_dir, opt.interface, route_tab));
  // The names last: they point at addresses that now exist. Read again
  // under the lock, so concurrent runs for other interfaces keep theirs.
  if (manage_hosts) {
    MESH_TRY(sync_hosts_file(opt.hosts_file, opt.interface, hosts_text, false, env.state_dir).status());
    lap("hosts file updated");
  }
  lap("applied");
  // A daemon's sockets are new after it starts, after the link comes up
  // and after a port change; a full read of the device (the periodic
  // verification) checks them again, in case someone cycled the link.
  // After a link-up the daemon opens them a moment later, and this waits
  // for that.
  if (plan.create_interface || plan.set_up || plan.set_listen_port || !obs.device_from_memo) {
    size_daemon_sockets(wg, opt, plan.create_interface || plan.set_up ? 500 : 0, log);
    lap("daemon sockets sized");
  }
  return std::move(done.summary);
}

Result<std::string> run_tune(const std::string& interface, const std::string& backend, int bytes,
                             const BackendEnv& env) {
  MESH_TRY(check_interface_name(interface));
  if (bytes <= 0) return usage_error("--socket-buffer must be a positive number of bytes");
  if (!have_net_admin()) return no_permission("sizing " + interface + "'s sockets needs root (CAP_NET_ADMIN)");
  MESH_ASSIGN(auto wg, choose_backend(backend, interface, env));
  MESH_ASSIGN(bool exists, wg->exists());
  if (!exists)
    return unavailable("no WireGuard interface " + interface + " served by the " + wg->name() + " backend");
  // An up link whose daemon has no socket yet is one that came up a moment
  // ago (the daemon binds when it reads the event): give it a second.
  MESH_ASSIGN(Rtnl rt, Rtnl::open());
  MESH_ASSIGN(auto link, rt.get_link(interface));
  MESH_ASSIGN(SocketSizing n, wg->size_sockets(bytes, link && link->up ? 1000 : 0));
  Json doc{{"interface", interface},   {"backend", wg->name()}, {"socket_buffer", bytes},
           {"sockets", n.sockets},     {"raised", n.raised},    {"changed", n.raised > 0}};
  return dump_json(doc) + "\n";
}

Result<std::string> run_down(const std::string& interface, const std::string& backend,
                             const std::string& hosts_file, const BackendEnv& env, const Log& log) {
  MESH_TRY(check_interface_name(interface));
  if (!have_net_admin()) return no_permission("removing " + interface + " needs root (CAP_NET_ADMIN)");
  // A damaged block is refused before anything is removed.
  if (!hosts_file.empty()) MESH_TRY(sync_hosts_file(hosts_file, interface, "", true, "").status());
  std::string table = firewall_table_name(interface);
  UniqueFd lock = lock_interface(env.state_dir, interface);
  MESH_ASSIGN(auto digest, firewall_current_digest(table));
  MESH_ASSIGN(auto wg, choose_backend(backend, interface, env));
  MESH_ASSIGN(Rtnl rt, Rtnl::open());
  MESH_ASSIGN(auto link, rt.get_link(interface));
  MESH_ASSIGN(bool wg_exists, wg->exists());
  if (link && !wg_exists)
    return Status(Exit::Config, "interface " + interface +
                                    " is not a WireGuard device mesh-apply manages; not removing it");
  bool fw_existed = digest.has_value();
  remove_memo(env.state_dir, interface);
  MESH_TRY(firewall_remove(table));
  if (wg_exists || link) MESH_TRY(wg->destroy());
  bool removed = wg_exists || link.has_value();
  // What routing changed: forwarding sysctls back as they were; the
  // watcher's route table gone (the watcher stops with the interface).
  std::vector<std::string> restored;
  MESH_TRY(restore_all_sysctls(env.state_dir, interface, &restored));
  // The exit node's policy rules (ours by protocol; one exit-node interface
  // per host) and what is left of its table.
  bool exit_removed = false;
  if (auto ex = read_exit_state(); ex) {
    ExitChange c = exit_diff(ExitState{}, *ex);
    exit_removed = !c.empty();
    MESH_TRY(change_exit_state(c));
  }
  ::unlink(route_table_path(env.state_dir, interface).c_str());
  ::unlink((env.state_dir + "/" + interface + ".lock").c_str());  // still held: nothing left
  HostsSync hosts;
  if (!hosts_file.empty()) {
    MESH_ASSIGN(hosts, sync_hosts_file(hosts_file, interface, "", false, env.state_dir));
  }
  if (!removed && !fw_existed && !hosts.changed && restored.empty() && !exit_removed) log.info("nothing to remove for " + interface);
  Json doc{{"interface", interface},
           {"backend", wg->name()},
           {"changed", removed || fw_existed || hosts.changed || !restored.empty() || exit_removed},
           {"sysctls_restored", restored},
           {"exit_node_removed", exit_removed},
           {"interface_removed", removed},
           {"firewall_removed", fw_existed},
           {"firewall", {{"table", "inet " + table}}},
           {"hosts", {{"file", hosts_file.empty() ? Json(nullptr) : Json(hosts_file)},
                      {"changed", hosts.changed}}}};
  return dump_json(doc) + "\n";
}

}  // namespace mesh::apply
