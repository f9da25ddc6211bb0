#include "coord/server.h"

#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <sstream>
#include <thread>

#include "coord/auth.h"
#include "coord/client.h"
#include "coord/candidates.h"
#include "coord/httpguard.h"
#include "coord/limits.h"
#include "coord/mapjson.h"
#include "coord/oauth.h"
#include "coord/oidc.h"
#include "coord/notifier.h"
#include "coord/punch.h"
#include "coord/replica.h"
#include "coord/revoked.h"
#include "coord/requests.h"
#include "coord/rotate.h"
#include "coord/routeops.h"
#include "coord/store.h"
#include "coord/users.h"
#include "core/base64.h"
#include "core/file.h"
#include "core/key.h"
#include "netmap/endpoints.h"

namespace mesh::coord {
namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Monotonic milliseconds, for the in-memory punch queue and its rate limit.
int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// This thread's CPU time in microseconds: with thousands of watchers woken
// at once, wall time would count the others' turns on the cores.
uint64_t thread_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
}

// Punch requests: per requester at most kPunchBurst requests in any
// kPunchWindowMs, each naming at most kPunchTargets peers.
constexpr size_t kPunchBurst = 30;
constexpr int64_t kPunchWindowMs = 10000;
constexpr size_t kPunchTargets = 64;

// How long replicas' change log is kept (a replica down longer reloads).
constexpr int64_t kChangeLogSeconds = 86400;

// An error for the HTTP client: status, message, and the request field it
// is about (when one is).
struct ApiError {
  int http = 400;
  std::string message;
  std::string field;
};


int http_for(Exit e) {
  switch (e) {
    case Exit::DataErr: return 400;
    case Exit::NoPerm: return 403;
    case Exit::NoInput: return 404;
    case Exit::TempFail: return 429;
    case Exit::Unavailable:
    case Exit::IoErr: return 503;
    default: return 500;
  }
}

// "request: groups[1]: expected string" -> field "groups[1]".
std::string field_of(const std::string& msg) {
  const std::string pre = "request: ";
  if (msg.rfind(pre, 0) != 0) return "";
  auto end = msg.find(": ", pre.size());
  if (end == std::string::npos) return "";
  std::string f = msg.substr(pre.size(), end - pre.size());
  return f == "(top level)" ? "" : f;
}

ApiError from_status(const Status& s, int http = 0) {
  return ApiError{http ? http : http_for(s.code()), s.message(), field_of(s.message())};
}

Exit exit_for_http(int http) {
  if (http == 401 || http == 403) return Exit::NoPerm;
  if (http == 429) return Exit::TempFail;
  if (http >= 500) return Exit::Unavailable;
  return Exit::DataErr;
}

// As Response::set_content, without its copy of the body (this httplib
// takes only a const reference): a map is ~100 KB, sent to every watcher.
void set_body(httplib::Response& res, std::string&& body, const char* type) {
  res.body = std::move(body);
  res.headers.erase("Content-Type");
  res.set_header("Content-Type", type);
}

void send_json(httplib::Response& res, int status, const Json& j) {
  res.status = status;
  set_body(res, dump_json(j) + "\n", "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  Json err{{"status", e.http}, {"exit", exit_name(exit_for_http(e.http))}, {"message", e.message}};
  if (!e.field.empty()) err["field"] = e.field;
  send_json(res, e.http, Json{{"error", err}});
}

Result<Json> json_body(const httplib::Request& req, size_t max) {
  if (req.body.size() > max)
    return data_error("request: body larger than " + std::to_string(max) + " bytes");
  auto ct = req.get_header_value("Content-Type");
  if (!req.body.empty() && !ct.empty() && ct.find("json") == std::string::npos)
    return data_error("request: Content-Type must be application/json");
  return parse_json(req.body, "request");
}

// Who made an admin request (mesh-coord(8), Admin by login): the admin
// token, or an ID token of the issuer: a user in --oidc-admin-group, or
// another user, who may list, show and delete only their own peers.
struct Caller {
  std::string actor = "admin";  // audit actor: "admin" or "user:EMAIL"
  std::string subject;          // the user's, for a login
  bool admin = true;
};

struct PeerAuth {
  PublicKey key;
  SessionKeys keys;
  std::string nonce;
  std::string body;  // the request body, unsealed
  bool sealed = false;  // X-Mesh-Seal: the response is sealed too
  bool previous = false;  // made for the previous coordinator key (coord/rotate.h)
};

bool is_loopback(const std::string& addr) {
  auto ip = IpAddr::parse(addr);
  return ip && ip->is_loopback();
}

// A peer request's body, unsealed by auth_peer.
Result<Json> json_body(const PeerAuth& a, size_t max) {
  if (a.body.size() > max)
    return data_error("request: body larger than " + std::to_string(max) + " bytes");
  return parse_json(a.body, "request");
}

// A secret file's text, trimmed (the file's copy wiped); Config when empty.
Result<std::string> read_secret(const std::string& path, const std::string& what) {
  MESH_ASSIGN(auto text, read_file(path, 4096));
  std::string secret(trim_key_text(text));
  wipe(text);
  if (secret.empty()) return Status(Exit::Config, path + ": empty " + what);
  return secret;
}

class Coordinator {
 public:
  Coordinator(const ServeOptions& opt, Log& log)
      : opt_(opt),
        log_(log),
        model_(ModelConfig{}),
        nonces_(opt.max_nonces),
        limiter_(opt.auth_failures_per_minute),
        punch_limiter_(kPunchBurst, kPunchWindowMs),
        announce_limiter_(static_cast<size_t>(std::max(opt.announces_per_minute, 0)), 60000),
        watches_(opt.max_watches_per_peer) {}

  Status init();
  void routes(httplib::Server& s);
  // Replicas (shared store): follows the other replicas' changes until stop.
  void follow(const std::atomic<bool>& stop);
  bool replicated() const { return store_->shared(); }
  void janitor(const std::atomic<bool>& stop);
  void set_server(ConnectionGuard* g) { guard_ = g; }
  // Wakes every long-poll so the server can stop without waiting them out.
  void shutdown() {
    {
      std::unique_lock lk(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
  }

 private:
  // ---- plumbing
  Status load_model();
  Status persist(const std::function<Status(Store&)>& ops, const Changes& ch, const Event& ev);
  Status persist_changes(Store& st, const Changes& ch);
  // Wakes the long-polls after a change: every one, or only those of the
  // peers given (their maps or punch queues changed, nothing else did).
  void publish() { wake_.notify_all(); }
  void publish(std::span<const uint32_t> peers) { wake_.notify(peers); }
  // Wakes the watchers concerned by the changes catch_up_locked applied
  // (with mu_ held: it takes what they recorded).
  void publish_applied();
  Status record_event(const Event& ev);

  // Held by every mutation: mu_ exclusively and, on a shared store, the
  // store (store_mu_) with a transaction open under the writers' lock, after
  // catching up with every change other replicas committed (replica.h). The
  // mutation's persist() commits that transaction; an early return rolls it
  // back.
  class WriteLock {
   public:
    explicit WriteLock(Coordinator& c);
    ~WriteLock() { release(); }
    explicit operator bool() const { return status_.is_ok(); }
    const Status& status() const { return status_; }
    void unlock() {
      release();
      lk_.unlock();
    }

   private:
    void release();
    Coordinator& c_;
    std::unique_lock<std::shared_mutex> lk_;
    std::unique_lock<std::recursive_mutex> store_lk_;
    Status status_;
  };
  // With mu_ exclusive and store_mu_ held: applies the changes committed
  // after applied_change_. True when some map or the revocations changed.
  Result<bool> catch_up_locked();
  // Without locks: catches up if the change log moved (takes mu_ only then).
  void catch_up();
  Result<PeerAuth> auth_peer(const httplib::Request& req, bool require_enrolled, uint32_t* id);
  bool auth_admin(const httplib::Request& req, httplib::Response& res, Caller* who = nullptr);
  Result<Caller> login_caller(const std::string& token);
  void sign(const PeerAuth& a, httplib::Response& res);
  void peer_error(const PeerAuth* a, httplib::Response& res, const ApiError& e);
  void auth_error(const httplib::Request& req, httplib::Response& res, const Status& s);

  // ---- handlers
  void h_info(const httplib::Request&, httplib::Response&);
  void h_join(const httplib::Request&, httplib::Response&);
  std::optional<ApiError> choose_name(const SetupKey& key, const JoinRequest& want, uint32_t id,
                                      std::string* out);
  void h_map(const httplib::Request&, httplib::Response&);
  void h_announce(const httplib::Request&, httplib::Response&);
  void h_punch(const httplib::Request&, httplib::Response&);
  // With mu_ exclusive: queues `from`'s request for each target that is
  // enrolled, enabled and (when `visible` is given, sorted ids) visible to
  // the requester. Returns the targets queued, and adds their ids to `ids`
  // (the watchers to wake).
  std::vector<PublicKey> queue_punches_locked(const PublicKey& from, const std::string& name,
                                              const std::vector<PublicKey>& targets,
                                              const std::vector<uint32_t>* visible, int64_t now_ms,
                                              std::vector<uint32_t>& ids);
  // A broadcast from another replica (a punch request it accepted).
  void receive_broadcast(const std::string& payload);
  // Janitor: peers parked in a long-poll here are active; on a shared
  // store, the ephemeral peers seen here go to the store, and stale ones
  // seen recently by another replica are kept.
  void touch_watchers(int64_t now);
  void share_last_seen(int64_t now);
  void keep_seen_elsewhere(std::vector<uint32_t>& stale, int64_t now);
  void h_rotate_key(const httplib::Request&, httplib::Response&);
  void h_self(const httplib::Request&, httplib::Response&);
  Status load_previous_key();
  void h_keys_create(const httplib::Request&, httplib::Response&);
  void h_keys_list(const httplib::Request&, httplib::Response&);
  void h_keys_revoke(const httplib::Request&, httplib::Response&);
  void h_peers_list(const httplib::Request&, httplib::Response&);
  void h_peer_op(const httplib::Request&, httplib::Response&, const std::string& op);
  void h_policy_get(const httplib::Request&, httplib::Response&);
  void h_policy_set(const httplib::Request&, httplib::Response&);
  void h_policy_check(const httplib::Request&, httplib::Response&);
  void h_policy_plan(const httplib::Request&, httplib::Response&);
  void h_events(const httplib::Request&, httplib::Response&);
  void h_metrics(const httplib::Request&, httplib::Response&);
  void h_relay_revoked(const httplib::Request&, httplib::Response&);
  // Login (coord/users.h): enrolment with an ID token, the users' admin
  // verbs, and the login expiry timer.
  void h_login(const httplib::Request&, httplib::Response&);
  void h_login_device(const httplib::Request&, httplib::Response&);
  // The ID token of a login request: given, or got from the provider with
  // the coordinator's secret; nullopt (and a 202 sent) while a device flow
  // is pending.
  Result<std::optional<std::string>> login_token(const PeerAuth& a, const LoginRequest& body,
                                                 httplib::Response& res);
  void h_users_list(const httplib::Request&, httplib::Response&);
  void h_user_op(const httplib::Request&, httplib::Response&, const std::string& op);
  bool expire_due_logins(int64_t now);
  Status persist_peers(const std::vector<uint32_t>& ids, const User* user, const Changes& ch,
                       const Event& ev);
  Status put_peers(Store& st, const std::vector<uint32_t>& ids, const User* user);
  // An "id-token" record (used_tokens_) into the map; null erases it.
  Status apply_used_token(const std::string& hash, const Json& rec);
  void h_route_op(const httplib::Request&, httplib::Response&, const std::string& op);

  Json registration(const Peer& p) const;
  Result<PeerAuth> keys_for(const PublicKey& k);
  Status check_candidates(const std::vector<Candidate>& cands);
  void prune_audit(int64_t now);
  Status delete_peer_locked(Peer& p, const std::string& actor, const std::string& why);

  ServeOptions opt_;
  Log& log_;
  std::unique_ptr<Store> store_;
  // Shared store: a connection of the janitor's own for fold_serials, so a
  // fold (about a second at 100,000 peers) holds neither store_mu_ nor the
  // writers' lock.
  std::unique_ptr<Store> fold_store_;
  // Recursive: a WriteLock holds it across the handler's persist().
  std::recursive_mutex store_mu_;
  std::atomic<int64_t> applied_change_{0};  // the newest change in the model
  bool synced_ = false;  // the open transaction caught up (guarded by store_mu_)
  SecretKey coord_key_;
  PublicKey coord_pub_;
  // The previous coordinator key, accepted while prev_until_ > now.
  SecretKey prev_key_;
  PublicKey prev_pub_;
  int64_t prev_until_ = 0;
  std::string admin_token_;
  Model model_;
  std::vector<SetupKey> setup_keys_;
  RevocationList revoked_;  // deleted peers' relay credentials (guarded by mu_)
  std::unique_ptr<oidc::Issuer> issuer_;  // null: login disabled
  Users users_;                           // guarded by mu_
  // SHA-256 of ID tokens that enrolled a node key, until they expire (mu_):
  // a token that leaked cannot enrol a second key.
  // Persisted as "id-token" records (keyed by the hash, kept until expiry)
  // so a restart or another replica refuses a replay too.
  std::map<std::string, std::pair<PublicKey, int64_t>> used_tokens_;
  oauth::ClientAuth oidc_client_;  // secret empty: a public client
  std::mutex pending_mu_;
  oauth::PendingLogins pending_logins_{256, 8};  // guarded by pending_mu_
  std::atomic<int64_t> next_expiry_{0};   // earliest login expiry; 0: check now
  std::shared_mutex mu_;
  Notifier wake_;
  // What the changes applied from other replicas concern (under mu_):
  // publish_applied() wakes those watchers.
  std::vector<uint32_t> applied_wake_;
  bool applied_wake_all_ = false;
  NonceCache nonces_;       // enrolled peers' requests
  JoinNonces join_nonces_;  // join requests, signed by any key (limits.h)
  FailureLimiter limiter_;  // failed authentications per source
  SessionKeyCache keycache_;  // enrolled peers only
  // Pushed under mu_ held exclusively (see h_punch), drained by h_map.
  PunchQueue punches_;
  // Per requester; on a shared store it also counts the requests other
  // replicas broadcast, so the limit holds across replicas.
  WindowLimiter punch_limiter_;
  // Shared store: punch requests to the other replicas (receive_broadcast),
  // tagged with this process's random id.
  std::unique_ptr<Broadcaster> bcast_;
  uint64_t replica_id_ = 0;
  bool started_ = false;  // init() done: reloads keep the stored settings
  // Shared store: last_seen times up to this one are in the store (janitor
  // thread only).
  int64_t seen_shared_at_ = 0;
  WindowLimiter announce_limiter_;
  WatchCounter watches_;  // long-polls per peer
  SentMaps sent_;         // the peers of the last map sent to each delta watcher
  ConnectionGuard* guard_ = nullptr;
  bool stopping_ = false;  // guarded by mu_
  // metrics
  std::atomic<int64_t> watchers_{0};
  std::atomic<uint64_t> requests_{0}, auth_failures_{0}, maps_served_{0}, pushes_{0};
  std::atomic<uint64_t> deltas_served_{0}, map_bytes_{0};
  std::atomic<uint64_t> map_build_us_{0};
  std::atomic<uint64_t> watch_wakeups_{0};  // parked long-polls woken (for a new map, or spuriously)
  std::atomic<uint64_t> rate_limited_{0};
  std::atomic<uint64_t> punches_queued_{0}, punches_delivered_{0};
};

// ------------------------------------------------------------------ init

// A secret the coordinator reads back must be its own and private: a
// group- or world-readable key or token may already have leaked (ssh refuses
// such keys for the same reason).
static Status check_secret_mode(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return errno_status(path, errno);
  if (st.st_uid != ::geteuid())
    return Status(Exit::Config, path + ": owned by uid " + std::to_string(st.st_uid) +
                                    ", not by this user (uid " + std::to_string(::geteuid()) +
                                    "); fix with chown");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status(Exit::Config, path + ": mode " + mode +
                                    " lets group or others read a secret; fix with chmod 600 " + path);
  }
  return Status::ok();
}

Status Coordinator::init() {
  MESH_TRY(make_dirs(opt_.state_dir, 0700));
  // The coordinator's key pair: created once, 0600.
  std::string key_path = opt_.state_dir + "/coordinator.key";
  auto existing = read_file(key_path, 4096);
  if (existing) {
    if (Status m = check_secret_mode(key_path); !m) {
      wipe(*existing);
      return m;
    }
    auto k = SecretKey::from_base64(*existing);
    wipe(*existing);
    if (!k) return Status(Exit::Config, key_path + ": " + k.status().message());
    coord_key_ = *k;
  } else if (existing.status().code() == Exit::NoInput) {
    coord_key_ = SecretKey::generate_private();
    std::string text = coord_key_.to_base64() + "\n";
    Status s = write_file_atomic(key_path, text, 0600, Overwrite::No);
    wipe(text);
    MESH_TRY(s);
  } else {
    return existing.status();
  }
  coord_pub_ = coord_key_.public_key();
  MESH_TRY(write_file_atomic(opt_.state_dir + "/coordinator.pub", coord_pub_.to_base64() + "\n",
                             0644));
  if (!opt_.previous_key_file.empty()) MESH_TRY(load_previous_key());
  std::string tok_path = opt_.state_dir + "/admin.token";
  auto tok = read_file(tok_path, 4096);
  if (tok) {
    if (Status m = check_secret_mode(tok_path); !m) {
      wipe(*tok);
      return m;
    }
    admin_token_ = std::string(trim_key_text(*tok));
    wipe(*tok);
    if (admin_token_.size() < 16) return Status(Exit::Config, tok_path + ": token too short");
  } else if (tok.status().code() == Exit::NoInput) {
    admin_token_ = random_token(32);
    MESH_TRY(write_file_atomic(tok_path, admin_token_ + "\n", 0600, Overwrite::No));
  } else {
    return tok.status();
  }
  MESH_ASSIGN(store_, Store::open(opt_.store.empty() ? opt_.state_dir + "/coord.db" : opt_.store));
  if (!opt_.oidc_issuer.empty()) {
    issuer_ = std::make_unique<oidc::Issuer>(opt_.oidc_issuer, opt_.oidc_client_id,
                                             opt_.oidc_groups_claim, opt_.oidc_ca_file, log_);
    oidc_client_.client_id = opt_.oidc_client_id;
    if (!opt_.oidc_client_secret_file.empty()) {
      MESH_ASSIGN(oidc_client_.secret, read_secret(opt_.oidc_client_secret_file, "client secret"));
    }
    // The IdP may start later: logins refetch its keys when they need them.
    if (Status s = issuer_->refresh(unix_now()); !s)
      log_.warn("oidc: " + s.message() + " (retried at the first login)");
  }
  if (!store_->shared()) {
    MESH_TRY(load_model());
    started_ = true;
    return Status::ok();
  }
  random_bytes(reinterpret_cast<uint8_t*>(&replica_id_), sizeof replica_id_);
  MESH_ASSIGN(bcast_, store_->broadcaster());
  MESH_ASSIGN(fold_store_, Store::open(opt_.store));
  // Replicas start one at a time (the writers' lock), so the first one
  // alone picks what later ones adopt (the IPv6 prefix, ...).
  MESH_TRY(store_->begin());
  Status s = load_model();
  // What the log holds beyond the serials table, this start read: written
  // to it now, so the next start reads less.
  if (s) s = store_->fold_serials();
  if (s) {
    auto pub = store_->get_meta("coordinator_public_key");
    if (!pub)
      s = pub.status();
    else if (*pub && **pub != coord_pub_.to_base64())
      s = Status(Exit::Config, store_->describe() + " belongs to coordinator " + **pub + ", not " +
                                   coord_pub_.to_base64() + " (" + opt_.state_dir +
                                   "/coordinator.key): replicas share one key pair");
    else if (!*pub)
      s = store_->set_meta("coordinator_public_key", coord_pub_.to_base64());
  }
  if (s && store_->in_transaction()) s = store_->commit();
  if (!s) store_->rollback();
  started_ = s.is_ok();
  return s;
}

// --previous-coordinator-key: kept secret like the current key.
Status Coordinator::load_previous_key() {
  const std::string& path = opt_.previous_key_file;
  MESH_ASSIGN(auto text, read_file(path, 4096));
  Status m = check_secret_mode(path);
  auto k = m ? SecretKey::from_base64(text) : Result<SecretKey>(m);
  wipe(text);
  if (!k) return Status(Exit::Config, path + ": " + k.status().message());
  if (k->public_key() == coord_pub_)
    return Status(Exit::Config, path + ": is the current coordinator key (" + opt_.state_dir +
                                    "/coordinator.key); move the old key away first");
  prev_key_ = *k;
  prev_pub_ = k->public_key();
  prev_until_ = opt_.previous_key_until;
  if (prev_until_ <= unix_now())
    log_.warn("--previous-key-until is past: the previous coordinator key is refused");
  return Status::ok();
}

Status Coordinator::load_model() {
  ModelConfig cfg;
  cfg.stun = opt_.stun;
  cfg.turn = opt_.turn;
  cfg.credential_lifetime = opt_.credential_lifetime;
  cfg.keepalive = opt_.keepalive;
  if (!opt_.relay_secret_file.empty()) {
    MESH_ASSIGN(cfg.relay_secret, read_secret(opt_.relay_secret_file, "relay secret"));
  }
  MESH_ASSIGN(int64_t applied, store_->last_change());
  MESH_ASSIGN(auto peers, store_->load_peers());
  // Overlay prefixes are fixed once peers hold addresses from them.
  auto prefix_meta = [&](const std::string& key, const std::string& flag,
                         const std::string& fallback, Prefix* out) -> Status {
    MESH_ASSIGN(auto stored, store_->get_meta(key));
    std::string text = flag.empty() ? (stored ? *stored : fallback) : flag;
    auto p = Prefix::parse(text);
    if (!p) return Status(Exit::Usage, "--" + key.substr(0, 4) + "-prefix: " + p.status().message());
    *out = *p;
    // Running replicas allocate from the stored prefix: it is fixed.
    if (stored && *stored != p->to_string() && store_->shared())
      return Status(Exit::Usage, "--" + key.substr(0, 4) + "-prefix " + p->to_string() + ": " +
                                     store_->describe() + " holds " + key + " " + *stored +
                                     ", fixed for every replica; start without the option "
                                     "or with " + *stored);
    if (stored && *stored != p->to_string() && !peers.empty())
      return Status(Exit::Config, key + " is " + *stored +
                                      " and peers hold addresses in it; it cannot change to " +
                                      p->to_string());
    if (!stored || *stored != p->to_string()) MESH_TRY(store_->set_meta(key, p->to_string()));
    return Status::ok();
  };
  MESH_TRY(prefix_meta("ipv4_prefix", opt_.ipv4_prefix, "100.64.0.0/10", &cfg.ipv4));
  if (!cfg.ipv4.addr.is_v4() || cfg.ipv4.len > 30 || cfg.ipv4.len < 8)
    return usage_error("--ipv4-prefix must be an IPv4 prefix between /8 and /30");
  // RFC 4193: fd00::/8 plus a 40-bit random global ID gives a /48.
  std::array<uint8_t, 5> gid{};
  random_bytes(gid.data(), gid.size());
  char ula[64];
  snprintf(ula, sizeof ula, "fd%02x:%02x%02x:%02x%02x::/48", gid[0], gid[1], gid[2], gid[3], gid[4]);
  MESH_TRY(prefix_meta("ipv6_prefix", opt_.ipv6_prefix, ula, &cfg.ipv6));
  // The DNS domain may change (unlike the prefixes), but only with a new
  // serial for every map, below; without --dns-domain the stored one stays.
  // Only at start: a later reload keeps what another replica may have set.
  MESH_ASSIGN(auto stored_domain, store_->get_meta("dns_domain"));
  std::string flag_domain = started_ ? std::string() : opt_.dns_domain;
  cfg.dns_domain = !flag_domain.empty() ? flag_domain : stored_domain ? *stored_domain : "mesh";
  if (!valid_dns_domain(cfg.dns_domain))
    return usage_error("--dns-domain " + cfg.dns_domain + ": not a DNS name");
  bool domain_changed = !stored_domain || *stored_domain != cfg.dns_domain;
  if (cfg.ipv6.addr.is_v4() || cfg.ipv6.len > 96)
    return usage_error("--ipv6-prefix must be an IPv6 prefix of /96 or shorter");

  Model m(cfg);
  for (auto& sp : peers) {
    MESH_ASSIGN(auto up, Peer::from_record(sp.record));
    up->serial = sp.serial;
    up->generated_at = sp.generated_at;
    m.load_peer(std::move(up));
  }
  MESH_ASSIGN(auto pol, store_->get_meta("policy"));
  if (pol) {
    MESH_ASSIGN(auto j, parse_json(*pol, "stored policy"));
    MESH_ASSIGN(auto p, parse_policy(j, "stored policy"));
    m.load_policy(std::move(p));
  }
  MESH_ASSIGN(auto route_rows, store_->load_records("route"));
  MESH_ASSIGN(auto routes, routes_from_records(route_rows));
  m.load_routes(std::move(routes));
  auto num = [&](const std::string& key, uint64_t def) -> Result<uint64_t> {
    MESH_ASSIGN(auto v, store_->get_meta(key));
    return v ? std::stoull(*v) : def;
  };
  MESH_ASSIGN(auto serial, num("serial_counter", 0));
  MESH_ASSIGN(auto next_host, num("next_host", 1));
  MESH_ASSIGN(auto next_id, num("next_peer_id", 1));
  MESH_ASSIGN(auto cred_window, num("cred_window", 0));
  m.set_serial_counter(serial);
  m.set_next_host(static_cast<uint32_t>(next_host));
  m.set_next_id(static_cast<uint32_t>(next_id));
  m.set_cred_window(static_cast<int64_t>(cred_window));
  m.rebuild(unix_now());
  int64_t now = unix_now();
  for (auto* p : m.peers()) p->last_seen = std::max(p->last_seen.load(), now);
  std::vector<SetupKey> keys;
  MESH_ASSIGN(auto rows, store_->load_setup_keys());
  for (const auto& j : rows) {
    MESH_ASSIGN(auto k, setup_key_from_record(j));
    keys.push_back(std::move(k));
  }
  MESH_ASSIGN(auto rev_text, store_->get_meta("relay_revocations"));
  RevocationList rev;
  if (rev_text) {
    MESH_ASSIGN(auto rj, parse_json(*rev_text, "stored relay revocations"));
    MESH_ASSIGN(rev, RevocationList::from_json(rj));
    rev.prune(now);
  }
  Users users;
  MESH_ASSIGN(auto user_rows, store_->load_records("user"));
  for (const auto& [subject, j] : user_rows) {
    MESH_ASSIGN(auto u, User::from_json(j));
    users[u.subject] = std::move(u);
  }
  MESH_ASSIGN(auto token_rows, store_->load_records("id-token"));
  // Swap in only when everything loaded.
  users_ = std::move(users);
  used_tokens_.clear();
  for (const auto& [hash, j] : token_rows) MESH_TRY(apply_used_token(hash, j));
  next_expiry_ = 0;
  model_ = std::move(m);
  // Versions start again in a new model: what watchers were sent is no
  // base for a delta from it (they get whole maps once).
  sent_.clear();
  setup_keys_ = std::move(keys);
  revoked_ = std::move(rev);
  applied_change_ = applied;
  // Credentials may have aged while we were down.
  Changes ch = model_.tick_credentials(now);
  if (ch.serial != 0 || static_cast<uint64_t>(model_.cred_window()) != cred_window)
    MESH_TRY(persist([](Store&) { return Status::ok(); }, ch,
                     Event{0, now, "system", ch.serial ? "credentials.refresh" : "", "",
                           Json{{"maps_changed", ch.changed.size()}}}));
  // Maps served before carried another domain (or none: an older
  // coordinator's state); nodes see the new one only with new serials.
  if (domain_changed) {
    if (stored_domain && store_->shared())
      log_.info("dns domain " + *stored_domain + " -> " + cfg.dns_domain +
                " for every replica on " + store_->describe());
    Changes dc = model_.reissue_all(now);
    const std::string domain = cfg.dns_domain;
    Json detail{{"domain", domain}, {"maps_changed", dc.changed.size()}};
    if (stored_domain) detail["previous"] = *stored_domain;
    MESH_TRY(persist([&](Store& st) { return st.set_meta("dns_domain", domain); }, dc,
                     Event{0, now, "system", dc.serial ? "dns.domain" : "", domain, detail}));
  }
  return Status::ok();
}

Status Coordinator::persist_changes(Store& st, const Changes& ch) {
  for (uint32_t id : ch.changed) {
    const Peer* p = model_.by_id(id);
    if (p) MESH_TRY(st.set_map_serial(id, p->serial, p->generated_at));
  }
  MESH_TRY(st.set_meta("serial_counter", std::to_string(model_.serial_counter())));
  MESH_TRY(st.set_meta("next_host", std::to_string(model_.next_host())));
  MESH_TRY(st.set_meta("next_peer_id", std::to_string(model_.new_peer_id())));
  MESH_TRY(st.set_meta("cred_window", std::to_string(model_.cred_window())));
  return Status::ok();
}

// One transaction: the mutation's rows, the new map serials, the counters
// and the audit event. On failure the model (already changed in memory) is
// reloaded from the store, so memory never runs ahead of disk.
Status Coordinator::persist(const std::function<Status(Store&)>& ops, const Changes& ch,
                            const Event& ev) {
  std::lock_guard lk(store_mu_);
  Status s = store_->in_transaction() ? Status::ok() : store_->begin();
  bool synced = synced_;
  if (s) s = ops(*store_);
  if (s) s = persist_changes(*store_, ch);
  if (s && !ev.action.empty()) s = store_->add_event(ev).status();
  if (s) s = store_->commit();
  if (!s) {
    store_->rollback();
    log_.error("cannot persist " + ev.action + ": " + s.message() + "; reloading state");
    store_mu_.unlock();
    Status r = load_model();
    store_mu_.lock();
    if (!r) log_.error("reload failed: " + r.message());
    return unavailable("state not saved: " + s.message());
  }
  // Caught up under the writers' lock: nothing came between the last
  // applied change and this one.
  if (synced && store_->committed_change()) applied_change_ = store_->committed_change();
  synced_ = false;
  if (ch.serial) pushes_ += ch.changed.size();
  return Status::ok();
}

Coordinator::WriteLock::WriteLock(Coordinator& c) : c_(c), lk_(c.mu_) {
  if (!c.store_->shared()) return;
  store_lk_ = std::unique_lock<std::recursive_mutex>(c.store_mu_);
  status_ = c.store_->begin();
  if (!status_) {
    status_ = unavailable("store: " + status_.message());
    return;
  }
  auto r = c.catch_up_locked();
  if (!r) {
    c.store_->rollback();
    status_ = unavailable("store: " + r.status().message());
    return;
  }
  c.synced_ = true;
}

void Coordinator::WriteLock::release() {
  if (!store_lk_.owns_lock()) return;
  if (c_.store_->in_transaction()) c_.store_->rollback();
  c_.synced_ = false;
  store_lk_.unlock();
  // Watchers wait under mu_ (still held): they run once it is free.
  c_.publish_applied();
}

Result<bool> Coordinator::catch_up_locked() {
  bool changed = false;
  for (;;) {
    auto batch = store_->changes_after(applied_change_, 256);
    if (!batch && batch.status().code() == Exit::NoInput) {
      // Away longer than the change log is kept: everything again.
      log_.info("replica: " + batch.status().message() + "; reloading the whole state");
      MESH_TRY(load_model());
      applied_wake_all_ = true;
      return true;
    }
    if (!batch) return batch.status();
    if (batch->empty()) return changed;
    int64_t now = unix_now();
    for (const auto& c : *batch) {
      auto r = apply_change(model_, setup_keys_, revoked_, c.what, now);
      if (!r) {
        // A change this replica cannot apply (corrupt, or written by a newer
        // coordinator): serve what the database holds rather than diverge.
        log_.error("replica: change " + std::to_string(c.seq) + ": " + r.status().message() +
                   "; reloading the whole state");
        MESH_TRY(load_model());
        applied_wake_all_ = true;
        return true;
      }
      if (c.what.contains("records") && c.what["records"].contains("user"))
        for (const auto& [subject, rec] : c.what["records"]["user"].items()) {
          if (rec.is_null()) {
            users_.erase(subject);
            continue;
          }
          MESH_ASSIGN(auto u, User::from_json(rec));
          users_[u.subject] = std::move(u);
        }
      if (c.what.contains("records") && c.what["records"].contains("id-token"))
        for (const auto& [hash, rec] : c.what["records"]["id-token"].items())
          MESH_TRY(apply_used_token(hash, rec));
      next_expiry_ = 0;  // a login renewed elsewhere moves the next expiry
      changed = changed || r->maps_changed || r->revocations;
      applied_wake_all_ = applied_wake_all_ || r->everyone;
      applied_wake_.insert(applied_wake_.end(), r->woken.begin(), r->woken.end());
      applied_change_ = c.seq;
    }
  }
}

void Coordinator::catch_up() {
  {
    // The newest sequence number only: fetching the next change itself
    // read (and parsed) it twice, 0.6 MB for one reaching 100,000 maps.
    std::lock_guard slk(store_mu_);
    auto last = store_->last_change();
    if (last && *last == applied_change_) return;
  }
  std::unique_lock lk(mu_);
  std::lock_guard slk(store_mu_);
  auto r = catch_up_locked();
  if (!r) log_.error("replica: cannot catch up: " + r.status().message());
  // The woken wait for mu_: they run once this returns.
  publish_applied();
}

void Coordinator::publish_applied() {
  if (applied_wake_all_) publish();
  else if (!applied_wake_.empty()) publish(applied_wake_);
  applied_wake_.clear();
  applied_wake_all_ = false;
}

// Wakes on the other replicas' NOTIFY, and polls the change log every 2 s
// besides (a notification is a hint; the change log is the truth).
void Coordinator::follow(const std::atomic<bool>& stop) {
  auto listener = store_->listen();
  if (!listener) {
    log_.error("replica: " + listener.status().message());
    return;
  }
  auto last = std::chrono::steady_clock::now();
  bool down = false;
  while (!stop) {
    auto r = (*listener)->wait(200);
    for (const auto& b : (*listener)->take_broadcasts()) receive_broadcast(b);
    if (!r) {
      if (!down) log_.error("replica: " + r.status().message() + "; retrying");
      down = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    if (down) log_.info("replica: change notifications back");
    down = false;
    auto now = std::chrono::steady_clock::now();
    if (*r || now - last > std::chrono::seconds(2)) {
      last = now;
      catch_up();
    }
  }
}

Status Coordinator::record_event(const Event& ev) {
  std::lock_guard lk(store_mu_);
  return store_->add_event(ev).status();
}

// ------------------------------------------------------------------ auth

// Keys are cached by auth_peer only once the key proved to be an enrolled
// peer's, so requests signed with self-made keys never evict a peer's.
Result<PeerAuth> Coordinator::keys_for(const PublicKey& k) {
  if (auto hit = keycache_.get(k)) return PeerAuth{k, *hit, ""};
  auto keys = derive_session_keys(coord_key_, k, k, coord_pub_);
  if (!keys) return no_permission("bad peer key: " + keys.status().message());
  return PeerAuth{k, *keys, ""};
}

Result<PeerAuth> Coordinator::auth_peer(const httplib::Request& req, bool require_enrolled,
                                        uint32_t* id) {
  int64_t now = unix_now();
  // Bad signatures are counted but not rate limited: a 256-bit MAC cannot
  // be guessed, and one peer with a wrong clock must not lock out every
  // peer behind the same NAT. Setup keys (join) are rate limited.
  auto fail = [&](const std::string& m) -> Status {
    ++auth_failures_;
    return Status(Exit::NoPerm, m);
  };
  if (!require_enrolled && limiter_.blocked(source_key(req.remote_addr), now)) {
    ++rate_limited_;
    return temp_failure("too many failed authentications from " + req.remote_addr +
                        "; retry in a minute");
  }
  for (const char* h : {kHdrKey, kHdrTime, kHdrNonce, kHdrAuth})
    if (!req.has_header(h)) return fail(std::string("missing ") + h + " header");
  auto key = PublicKey::from_base64(req.get_header_value(kHdrKey));
  if (!key) return fail(std::string(kHdrKey) + ": " + key.status().message());
  auto time = parse_time_header(req.get_header_value(kHdrTime));
  if (!time) return fail(time.status().message());
  int64_t t = *time;
  MESH_ASSIGN(PeerAuth a, keys_for(*key));
  a.nonce = req.get_header_value(kHdrNonce);
  std::string want = request_mac(a.keys.request, req.method, req.target, t, a.nonce, req.body);
  if (!mac_equal(req.get_header_value(kHdrAuth), want)) {
    // Made for the previous coordinator key, during its overlap: answered
    // with it too (sign()), never cached under the peer's key.
    auto old = prev_until_ > now ? derive_session_keys(prev_key_, *key, *key, prev_pub_)
                                 : Result<SessionKeys>(no_permission(""));
    if (!old || !mac_equal(req.get_header_value(kHdrAuth),
                           request_mac(old->request, req.method, req.target, t, a.nonce, req.body)))
      return fail("bad request signature (wrong key, or the request was altered)");
    a.keys = *old;
    a.previous = true;
  }
  if (Status s = check_time(t, now); !s) return fail(s.message());
  // Unsealed bodies are accepted only where nobody else can read them: over
  // TLS or from this host (third-party clients need no AEAD there).
  a.sealed = req.get_header_value(kHdrSeal) == "1";
  if (!a.sealed && opt_.tls_cert.empty() && !is_loopback(req.remote_addr))
    return fail(std::string("request is not sealed (") + kHdrSeal +
                ": 1 is required over plain HTTP from another host)");
  if (!a.sealed) {
    a.body = req.body;
  } else if (!req.body.empty()) {
    auto plain = open_body(a.keys.seal_request, a.nonce, req.body);
    if (!plain) return fail(plain.status().message());
    a.body = std::move(*plain);
  }
  // Enrolment is checked before the nonce is remembered, so keys that are
  // not enrolled cannot fill the peers' nonce cache: join requests keep
  // theirs apart, bounded per source, and every failed join counts against
  // the source's limiter (routes()).
  if (!require_enrolled) {
    if (Status s = join_nonces_.check_and_insert(source_key(req.remote_addr), a.nonce, now); !s) {
      if (s.code() == Exit::NoPerm) return fail(s.message());
      ++rate_limited_;
      return s;
    }
    return a;
  }
  // A peer that just joined on another replica: catch up before refusing.
  if (store_->shared()) {
    bool known;
    {
      std::shared_lock lk(mu_);
      known = model_.by_key(*key) != nullptr;
    }
    if (!known) catch_up();
  }
  {
    std::shared_lock lk(mu_);
    Peer* p = model_.by_key(*key);
    if (!p) return Status(Exit::NoInput, "peer is not enrolled (deleted or never joined)");
    if (auto why = p->refusal(); !why.empty()) return Status(Exit::NoInput, why);
    *id = p->id;
  }
  if (Status s = nonces_.check_and_insert(a.nonce, now); !s) {
    if (s.code() == Exit::NoPerm) return fail(s.message());
    return s;
  }
  {
    std::shared_lock lk(mu_);
    if (Peer* p = model_.by_id(*id)) p->last_seen = now;
  }
  if (!a.previous) keycache_.put(a.key, a.keys);
  return a;
}

// "request: candidates[I]: ADDR:PORT is ...": the error names the candidate.
Status Coordinator::check_candidates(const std::vector<Candidate>& cands) {
  std::vector<Prefix> overlay;
  {
    std::shared_lock lk(mu_);
    overlay = {model_.config().ipv4, model_.config().ipv6};
  }
  for (size_t i = 0; i < cands.size(); ++i)
    if (Status s = check_candidate(cands[i], overlay); !s)
      return data_error("request: candidates[" + std::to_string(i) + "]: " + s.message());
  return Status::ok();
}

void Coordinator::sign(const PeerAuth& a, httplib::Response& res) {
  // Empty bodies stay empty: a 204 cannot carry one, and hides nothing.
  if (a.sealed) {
    if (!res.body.empty())
      set_body(res, seal_body(a.keys.seal_response, a.nonce, res.body), "application/octet-stream");
    res.set_header(kHdrSeal, "1");
  }
  res.set_header(kHdrAuth, response_mac(a.keys.response, res.status, a.nonce, res.body));
}

// A failed peer authentication: 429 when rate limited, 401 when the request
// is not authentic, 403 (signed: the request was authentic) when the key is
// not enrolled or disabled (auth_peer reports those as NoInput).
void Coordinator::auth_error(const httplib::Request& req, httplib::Response& res, const Status& s) {
  if (s.code() == Exit::TempFail) return send_error(res, from_status(s, 429));
  if (s.code() != Exit::NoInput) return send_error(res, from_status(s, 401));
  auto key = PublicKey::from_base64(req.get_header_value(kHdrKey));
  auto keys = key ? keys_for(*key) : Result<PeerAuth>(s);
  if (!keys) return send_error(res, from_status(s, 403));
  keys->nonce = req.get_header_value(kHdrNonce);
  peer_error(&*keys, res, from_status(s, 403));
}

void Coordinator::peer_error(const PeerAuth* a, httplib::Response& res, const ApiError& e) {
  send_error(res, e);
  if (a) sign(*a, res);
}

bool Coordinator::auth_admin(const httplib::Request& req, httplib::Response& res, Caller* who) {
  int64_t now = unix_now();
  std::string source = source_key(req.remote_addr);
  if (limiter_.blocked(source, now)) {
    ++rate_limited_;
    send_error(res, {429, "too many failed authentications from " + req.remote_addr +
                              "; retry in a minute"});
    return false;
  }
  std::string h = req.get_header_value("Authorization");
  const std::string pre = "Bearer ";
  if (h.rfind(pre, 0) == 0 && secure_equal(h.substr(pre.size()), admin_token_)) {
    if (who) *who = Caller{};
    return true;
  }
  std::string reason = h.empty() ? "no token" : "bad token";
  std::string bearer = h.rfind(pre, 0) == 0 ? h.substr(pre.size()) : "";
  if (issuer_ && std::count(bearer.begin(), bearer.end(), '.') == 2) {
    auto c = login_caller(bearer);
    if (c && (c->admin || req.path == "/v1/admin/peers" || req.path == "/v1/admin/peers/show" ||
              req.path == "/v1/admin/peers/delete")) {
      if (who) *who = *c;
      return true;
    }
    if (c) {
      (void)record_event(Event{0, now, c->actor, "auth.failed", "admin",
                               Json{{"reason", "not in the admin group"}, {"path", req.path}}});
      send_error(res, {403, c->actor.substr(5) + " is not in the admin group '" + opt_.oidc_admin_group +
                                "': a login may only list, show and delete its own peers"});
      return false;
    }
    reason = "login refused: " + c.status().message();
  }
  ++auth_failures_;
  limiter_.failed(source, now);
  (void)record_event(Event{0, now, "remote:" + req.remote_addr, "auth.failed", "admin",
                           Json{{"reason", reason}, {"path", req.path}}});
  send_error(res, {401, h.empty()                            ? "admin token required (Authorization: Bearer)"
                        : reason.rfind("login refused", 0) == 0 ? reason
                                                               : "bad admin token"});
  return false;
}

// ------------------------------------------------------------------ peer API

Json Coordinator::registration(const Peer& p) const {
  const ModelConfig& c = model_.config();
  return Json{{"id", p.id},
              {"name", p.name},
              {"public_key", p.public_key.to_base64()},
              {"addresses",
               {Prefix{p.ipv4, c.ipv4.len}.to_string(), Prefix{p.ipv6, c.ipv6.len}.to_string()}},
              {"groups", p.groups},
              {"tags", p.tags},
              {"listen_port", p.listen_port},
              {"ephemeral", p.ephemeral},
              {"coordinator_public_key", coord_pub_.to_base64()}};
}

void Coordinator::h_info(const httplib::Request&, httplib::Response& res) {
  std::shared_lock lk(mu_);
  Json info{{"coordinator_public_key", coord_pub_.to_base64()},
            {"version", MESH_VERSION},
            {"ipv4_prefix", model_.config().ipv4.to_string()},
            {"ipv6_prefix", model_.config().ipv6.to_string()}};
  if (issuer_)
    info["oidc"] = {{"issuer", issuer_->issuer()}, {"client_id", issuer_->client_id()},
                    {"login_expiry", opt_.login_expiry},
                    {"confidential", !oidc_client_.secret.empty()}};
  if (prev_until_ > unix_now()) {
    info["previous_coordinator_public_key"] = prev_pub_.to_base64();
    info["previous_key_until"] = prev_until_;
  }
  send_json(res, 200, info);
}

// GET /v1/self: this peer's registration, as join gave it, with the current
// coordinator key: how a node pinned to the previous key learns the new one
// (the answer is authenticated by the key the request was made for).
void Coordinator::h_self(const httplib::Request& req, httplib::Response& res) {
  uint32_t id = 0;
  auto a = auth_peer(req, true, &id);
  if (!a) return auth_error(req, res, a.status());
  std::shared_lock lk(mu_);
  const Peer* p = model_.by_id(id);
  if (!p || p->public_key != a->key) return peer_error(&*a, res, {403, "peer is not enrolled (deleted)"});
  Json reg = registration(*p);
  lk.unlock();
  send_json(res, 200, reg);
  sign(*a, res);
}

// The name a join enrols under (mesh-coord(8), Peer names). Policy grants by
// name, so a key bound to a name enrols only that name, and other keys get
// only names no peer holds and the policy does not name. Both refusals read
// the same, so a guest key cannot tell a policy name from a peer's.
std::optional<ApiError> Coordinator::choose_name(const SetupKey& key, const JoinRequest& want,
                                                 uint32_t id, std::string* out) {
  auto unavailable = [](const std::string& n) {
    return ApiError{409, "request: name: peer name '" + n +
                             "' is not available to this setup key (held by a peer, or "
                             "reserved for a setup key bound to it)", "name"};
  };
  if (!key.peer_name.empty()) {
    if (!want.name.empty() && want.name != key.peer_name)
      return ApiError{403, "request: name: this setup key enrols only the peer named '" +
                               key.peer_name + "'", "name"};
    *out = key.peer_name;
    if (model_.by_name(*out)) return unavailable(*out);
    return std::nullopt;
  }
  std::set<std::string> granted = granted_names(model_.policy());
  for (const auto& [n, r] : model_.admin_routes())  // routers by name, as in the policy's routes
    for (const auto& rr : r.routers)
      if (!rr.peer.empty()) granted.insert(rr.peer);
  auto free = [&](const std::string& n) { return !granted.count(n) && !model_.by_name(n); };
  if (!want.name.empty()) {
    if (!free(want.name)) return unavailable(want.name);
    *out = want.name;
    return std::nullopt;
  }
  // A hint (mesh-up's host name) falls back to HINT-ID, then peer-ID.
  std::string suffix = "-" + std::to_string(id);
  std::vector<std::string> tries;
  if (!want.name_hint.empty())
    tries = {want.name_hint, want.name_hint.substr(0, 63 - suffix.size()) + suffix};
  tries.push_back("peer" + suffix);
  for (const auto& n : tries)
    if (valid_name(n) && free(n)) {
      *out = n;
      return std::nullopt;
    }
  return unavailable(tries.back());
}

void Coordinator::h_join(const httplib::Request& req, httplib::Response& res) {
  auto a = auth_peer(req, false, nullptr);
  if (!a) return auth_error(req, res, a.status());
  auto j = json_body(*a, 16384);
  if (!j) return peer_error(&*a, res, from_status(j.status()));
  auto body = parse_join_request(*j);
  if (!body) return peer_error(&*a, res, from_status(body.status()));
  int64_t now = unix_now();
  std::string hash = sha256_hex(body->setup_key);
  wipe(body->setup_key);

  WriteLock lk(*this);
  if (!lk) return peer_error(&*a, res, from_status(lk.status()));
  SetupKey* key = nullptr;
  for (auto& k : setup_keys_)
    if (secure_equal(k.hash, hash)) key = &k;
  if (!key) {
    ++auth_failures_;
    lk.unlock();
    (void)record_event(Event{0, now, "remote:" + req.remote_addr, "auth.failed", "setup-key",
                             Json{{"reason", "unknown setup key"},
                                  {"public_key", a->key.to_base64()}}});
    return peer_error(&*a, res, {401, "invalid setup key", "setup_key"});
  }
  if (Peer* p = model_.by_key(a->key)) {
    // Enrolling the same key again is idempotent: same registration.
    if (p->disabled) return peer_error(&*a, res, {403, "peer is disabled"});
    send_json(res, 200, registration(*p));
    return sign(*a, res);
  }
  if (auto why = key->unusable_reason(now); !why.empty()) {
    lk.unlock();
    (void)record_event(Event{0, now, "remote:" + req.remote_addr, "auth.failed", "setup-key:" + key->name,
                             Json{{"reason", why}, {"public_key", a->key.to_base64()}}});
    return peer_error(&*a, res, {403, why, "setup_key"});
  }
  uint32_t id = model_.new_peer_id();
  std::string name;
  if (auto e = choose_name(*key, *body, id, &name)) {
    if (e->http == 409) {
      // Counted against the source like every refused join (routes()), and
      // logged: a key holder probing for names is slowed and seen.
      std::string key_name = key->name;
      lk.unlock();
      (void)record_event(Event{0, now, "setup-key:" + key_name, "auth.failed", "peer-name",
                               Json{{"reason", "name not available"},
                                    {"name", body->name.empty() ? body->name_hint : body->name},
                                    {"public_key", a->key.to_base64()}}});
    }
    return peer_error(&*a, res, *e);
  }
  auto host = model_.allocate_host();
  if (!host) return peer_error(&*a, res, from_status(host.status(), 507));
  auto p = std::make_unique<Peer>();
  p->id = id;
  p->name = name;
  p->public_key = a->key;
  p->host_index = *host;
  p->ipv4 = model_.host_v4(*host);
  p->ipv6 = model_.host_v6(*host);
  p->listen_port = model_.pick_listen_port(id);
  p->groups = key->groups;
  p->tags = key->tags;
  p->ephemeral = key->ephemeral;
  p->ephemeral_timeout = key->ephemeral_timeout;
  p->setup_key_id = key->id;
  p->created_at = now;
  p->last_seen = now;
  std::string record = dump_json(p->to_record());
  ++key->used;
  SetupKey key_copy = *key;
  Changes ch = model_.add_peer(std::move(p), now);
  Status s = persist(
      [&](Store& st) {
        MESH_TRY(st.put_peer(id, name, a->key.to_base64(), record));
        Json kr = key_copy.to_json();
        return st.put_setup_key(key_copy.id, key_copy.hash, dump_json(kr));
      },
      ch,
      Event{0, now, "setup-key:" + key_copy.name, "peer.join", name,
            Json{{"public_key", a->key.to_base64()}, {"maps_changed", ch.changed.size()}}});
  if (!s) return peer_error(&*a, res, from_status(s));
  Json reg = registration(*model_.by_id(id));
  lk.unlock();
  publish();
  send_json(res, 201, reg);
  sign(*a, res);
}

void Coordinator::h_map(const httplib::Request& req, httplib::Response& res) {
  uint32_t id = 0;
  auto a = auth_peer(req, true, &id);
  if (!a) return auth_error(req, res, a.status());
  uint64_t since = 0;
  int wait = 0;
  try {
    if (req.has_param("since")) since = std::stoull(req.get_param_value("since"));
    if (req.has_param("wait")) wait = std::clamp(std::stoi(req.get_param_value("wait")), 0, 120);
  } catch (const std::exception&) {
    return peer_error(&*a, res, {400, "request: since/wait: expected non-negative integers", "since"});
  }
  // events=1: pending punch requests end the wait as a new serial does.
  // delta=1: a watcher holding the map of `since` may get a delta from it.
  // Either makes the answer an envelope {"map"|"delta"?, "events"}; without
  // both it is the bare map, as for clients that predate them.
  bool events = false, delta = false;
  for (auto [name, flag] : {std::pair{"events", &events}, std::pair{"delta", &delta}}) {
    if (!req.has_param(name)) continue;
    std::string e = req.get_param_value(name);
    if (e != "0" && e != "1")
      return peer_error(&*a, res, {400, std::string("request: ") + name + ": expected 0 or 1", name});
    *flag = e == "1";
  }
  // A peer needs one long-poll (two while its watch restarts); more would
  // let one peer hold many of the coordinator's connection threads.
  std::string who = a->key.to_base64();
  struct Slot {
    WatchCounter& w;
    const std::string& who;
    bool held;
    ~Slot() {
      if (held) w.release(who);
    }
  } slot{watches_, who, wait > 0 && watches_.acquire(who)};
  if (wait > 0 && !slot.held) {
    ++rate_limited_;
    res.set_header("Retry-After", "5");
    return peer_error(&*a, res, {429, "too many concurrent watches by this peer (at most " +
                                          std::to_string(watches_.max()) + "); retry later"});
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait);
  std::shared_lock lk(mu_);
  bool counted = false;
  struct Gauge {
    std::atomic<int64_t>& g;
    bool& on;
    ~Gauge() {
      if (on) --g;
    }
  } gauge{watchers_, counted};
  for (;;) {
    const Peer* p = model_.by_id(id);
    if (!p || p->public_key != a->key) {
      sent_.erase(id);
      return peer_error(&*a, res, {403, "peer is not enrolled (deleted)"});
    }
    if (auto why = p->refusal(); !why.empty()) return peer_error(&*a, res, {403, why});
    // Punches are pushed with mu_ held exclusively, and this check runs
    // under the shared lock that wait_until releases atomically, so a push
    // cannot slip between the check and the wait (no lost wakeup).
    std::vector<PunchRequest> evs;
    if (events) evs = punches_.drain(a->key, mono_ms());
    if (p->serial != since || !evs.empty()) {
      Model::MapText m;
      if (p->serial != since) {
        uint64_t t0 = thread_cpu_us();
        std::optional<SentPeers> base;
        if (delta && since != 0) base = sent_.get(id, since);
        SentPeers now;
        m = model_.map_text(*p, base ? &*base : nullptr, delta ? &now : nullptr);
        if (delta) sent_.put(id, std::move(now));
        map_build_us_ += thread_cpu_us() - t0;
        ++maps_served_;
        if (m.delta) ++deltas_served_;
        map_bytes_ += m.text.size();
      }
      lk.unlock();
      std::string body = std::move(m.text);
      if (events || delta) {
        Json ev = Json::array();
        for (const auto& r : evs)
          ev.push_back({{"type", "punch"}, {"from", r.from.to_base64()}, {"name", r.name}});
        punches_delivered_ += evs.size();
        // The map text is spliced in as built: no re-parse of a large map.
        body = body.empty() ? "{\"events\":" + dump_json(ev) + "}"
                            : std::string(m.delta ? "{\"delta\":" : "{\"map\":") + body +
                                  ",\"events\":" + dump_json(ev) + "}";
      }
      res.status = 200;
      body += '\n';
      set_body(res, std::move(body), "application/json");
      return sign(*a, res);
    }
    if (stopping_) return peer_error(&*a, res, {503, "coordinator is shutting down"});
    if (wait == 0 || std::chrono::steady_clock::now() >= deadline) break;
    if (!counted) {
      counted = true;
      ++watchers_;
    }
    // Read under mu_, where every change to what is checked above is made
    // (notifier.h: then no wake-up is lost).
    uint64_t seen = wake_.generation(id);
    lk.unlock();
    if (wake_.wait_until(id, seen, deadline)) ++watch_wakeups_;
    lk.lock();
  }
  lk.unlock();
  res.status = 204;
  sign(*a, res);
}

void Coordinator::h_announce(const httplib::Request& req, httplib::Response& res) {
  uint32_t id = 0;
  auto a = auth_peer(req, true, &id);
  if (!a) return auth_error(req, res, a.status());
  // Each announce that changes something is a new map for every peer that
  // sees the announcer, and makes them probe: throttled per peer.
  int64_t wait_ms =
      opt_.announces_per_minute > 0 ? announce_limiter_.allow_or_wait(a->key, mono_ms()) : 0;
  if (wait_ms > 0) {
    ++rate_limited_;
    res.set_header("Retry-After", std::to_string((wait_ms + 999) / 1000));
    return peer_error(&*a, res, {429, "too many announces (at most " +
                                          std::to_string(opt_.announces_per_minute) +
                                          " per minute); retry in " +
                                          std::to_string((wait_ms + 999) / 1000) + " s"});
  }
  auto j = json_body(*a, 65536);
  if (!j) return peer_error(&*a, res, from_status(j.status()));
  auto doc = parse_endpoints(*j, "request");
  if (!doc) return peer_error(&*a, res, from_status(doc.status()));
  if (Status s = check_candidates(doc->candidates); !s)
    return peer_error(&*a, res, from_status(s));
  if (doc->public_key && *doc->public_key != a->key)
    return peer_error(&*a, res, {400, "request: public_key: does not match the authenticated peer", "public_key"});
  if (doc->candidates.size() > 32)
    return peer_error(&*a, res, {400, "request: candidates: at most 32 are accepted", "candidates"});
  int64_t now = unix_now();
  WriteLock lk(*this);
  if (!lk) return peer_error(&*a, res, from_status(lk.status()));
  Peer* p = model_.by_id(id);
  if (!p) return peer_error(&*a, res, {403, "peer is not enrolled (deleted)"});
  Json out{{"candidates", doc->candidates.size()}};
  if (p->endpoints == doc->candidates) {
    out["changed"] = false;
    send_json(res, 200, out);
    return sign(*a, res);
  }
  std::string name = p->name;
  Changes ch = model_.update_peer(id, false, now, [&](Peer& q) {
    q.endpoints = doc->candidates;
    q.endpoints_at = now;
  });
  Json cands = Json::array();
  for (const auto& c : doc->candidates) cands.push_back(candidate_to_json(c));
  std::string record = dump_json(p->to_record());
  Status s = persist([&](Store& st) { return st.put_peer(id, name, a->key.to_base64(), record); },
                     ch,
                     Event{0, now, "peer:" + name, "peer.announce", name, Json{{"candidates", cands}}});
  if (!s) return peer_error(&*a, res, from_status(s));
  lk.unlock();
  publish(ch.changed);  // frequent: wake only the watchers whose maps changed
  out["changed"] = true;
  out["maps_changed"] = ch.changed.size();
  send_json(res, 200, out);
  sign(*a, res);
}

// Call-me-maybe: queue "probe towards me now" for each target the
// requester's map holds. Not persisted and not audited (a peer punches on
// every path change); bounded per target and rate limited per requester.
void Coordinator::h_punch(const httplib::Request& req, httplib::Response& res) {
  uint32_t id = 0;
  auto a = auth_peer(req, true, &id);
  if (!a) return auth_error(req, res, a.status());
  int64_t now = mono_ms();
  if (!punch_limiter_.allow(a->key, now)) {
    ++rate_limited_;
    return peer_error(&*a, res,
                      {429, "too many punch requests (at most " + std::to_string(kPunchBurst) +
                                " per " + std::to_string(kPunchWindowMs / 1000) + " s); retry later"});
  }
  auto j = json_body(*a, 16384);
  if (!j) return peer_error(&*a, res, from_status(j.status()));
  auto parsed = parse_punch_request(*j, kPunchTargets);
  if (!parsed) return peer_error(&*a, res, from_status(parsed.status()));
  const std::vector<PublicKey>& targets = *parsed;
  PunchSignal sig{replica_id_, a->key, "", {}};
  std::vector<uint32_t> woken;
  {
    // Exclusive, although the model is only read: a watcher checks the
    // queue under the shared lock, so this orders the push against its
    // wait (see h_map).
    std::unique_lock lk(mu_);
    const Peer* me = model_.by_id(id);
    if (!me || me->public_key != a->key)
      return peer_error(&*a, res, {403, "peer is not enrolled (deleted)"});
    std::vector<uint32_t> vis = model_.visible(id);
    sig.name = me->name;
    sig.targets = queue_punches_locked(a->key, me->name, targets, &vis, now, woken);
  }
  size_t queued = sig.targets.size();
  if (queued) publish(woken);
  // The targets may watch another replica: every replica queues it for
  // its watchers (receive_broadcast). Best effort, like the request itself.
  if (queued && bcast_)
    if (Status s = bcast_->send(encode_punch_signal(sig)); !s)
      log_.warn("punch request not sent to the other replicas: " + s.message());
  // Unknown and invisible keys are counted together: the answer does not
  // tell a peer which keys exist beyond its map.
  send_json(res, 200, Json{{"queued", queued}, {"ignored", targets.size() - queued}});
  sign(*a, res);
}

std::vector<PublicKey> Coordinator::queue_punches_locked(const PublicKey& from,
                                                         const std::string& name,
                                                         const std::vector<PublicKey>& targets,
                                                         const std::vector<uint32_t>* visible,
                                                         int64_t now_ms,
                                                         std::vector<uint32_t>& ids) {
  std::vector<PublicKey> out;
  for (const auto& k : targets) {
    const Peer* q = model_.by_key(k);
    if (!q || q->disabled) continue;
    if (visible && !std::binary_search(visible->begin(), visible->end(), q->id)) continue;
    punches_.push(k, from, name, now_ms);
    out.push_back(k);
    ids.push_back(q->id);
  }
  punches_queued_ += out.size();
  return out;
}

// The accepting replica checked the requester and what it may see; this
// one only re-checks that the targets are still enrolled and enabled here.
// The same limiter counts the request, so a requester spreading requests
// over replicas gets no more than from one.
void Coordinator::receive_broadcast(const std::string& payload) {
  auto sig = parse_punch_signal(payload, kPunchTargets);
  if (!sig) {
    if (sig.status().code() != Exit::NoInput)
      log_.warn("replica: ignoring a broadcast: " + sig.status().message());
    return;
  }
  if (sig->origin == replica_id_) return;
  int64_t now = mono_ms();
  if (!punch_limiter_.allow(sig->from, now)) return;
  std::vector<uint32_t> woken;
  {
    std::unique_lock lk(mu_);
    queue_punches_locked(sig->from, sig->name, sig->targets, nullptr, now, woken);
  }
  if (!woken.empty()) publish(woken);
}

// Key rotation (coord/rotate.h): signed with the old key, proving the new
// one; one transaction swaps the key, and every map that shows it changes.
void Coordinator::h_rotate_key(const httplib::Request& req, httplib::Response& res) {
  uint32_t id = 0;
  auto a = auth_peer(req, true, &id);
  if (!a) return auth_error(req, res, a.status());
  auto j = json_body(*a, 4096);
  if (!j) return peer_error(&*a, res, from_status(j.status()));
  auto body = parse_rotate_request(*j);
  if (!body) return peer_error(&*a, res, from_status(body.status()));
  const PublicKey& fresh = body->public_key;
  if (fresh == a->key)
    return peer_error(&*a, res, {400, "request: public_key: is the current key", "public_key"});
  // The proof is made for the coordinator key the node trusts, which is the
  // previous one for a node that has not learned the new key yet.
  const SecretKey& ck = a->previous ? prev_key_ : coord_key_;
  const PublicKey& cp = a->previous ? prev_pub_ : coord_pub_;
  if (Status s = check_rotation_proof(ck, cp, a->key, fresh, a->nonce, body->proof); !s) {
    ++auth_failures_;
    return peer_error(&*a, res, from_status(s, s.code() == Exit::NoPerm ? 403 : 400));
  }
  int64_t now = unix_now();
  WriteLock lk(*this);
  if (!lk) return peer_error(&*a, res, from_status(lk.status()));
  Peer* p = model_.by_id(id);
  if (!p || p->public_key != a->key) return peer_error(&*a, res, {403, "peer is not enrolled (deleted)"});
  if (model_.by_key(fresh))
    return peer_error(&*a, res, {409, "request: public_key: already in use by a peer", "public_key"});
  std::string name = p->name;
  Changes ch = model_.rekey_peer(id, fresh, now);
  std::string record = dump_json(p->to_record());
  Status s = persist(
      [&](Store& st) { return st.put_peer(id, name, fresh.to_base64(), record); }, ch,
      Event{0, now, "peer:" + name, "peer.rotate-key", name,
            Json{{"from", a->key.to_base64()}, {"to", fresh.to_base64()},
                 {"maps_changed", ch.changed.size()}}});
  if (!s) return peer_error(&*a, res, from_status(s));
  Json reg = registration(*model_.by_id(id));
  lk.unlock();
  publish();
  reg["previous_public_key"] = a->key.to_base64();
  reg["maps_changed"] = ch.changed.size();
  send_json(res, 200, reg);
  sign(*a, res);
}

// ------------------------------------------------------------------ admin API

void Coordinator::h_keys_create(const httplib::Request& req, httplib::Response& res) {
  Caller who;
  if (!auth_admin(req, res, &who)) return;
  auto j = json_body(req, 65536);
  if (!j) return send_error(res, from_status(j.status()));
  auto parsed = parse_setup_key_request(*j, unix_now());
  if (!parsed) return send_error(res, from_status(parsed.status()));
  SetupKey k = std::move(*parsed);
  std::string secret = random_token(24);
  k.hash = sha256_hex(secret);
  int64_t now = unix_now();
  k.created_at = now;
  WriteLock lk(*this);
  if (!lk) return send_error(res, from_status(lk.status()));
  for (const auto& o : setup_keys_)
    if (o.name == k.name)
      return send_error(res, {409, "request: name: a setup key named '" + k.name + "' exists", "name"});
  k.id = 1;
  for (const auto& o : setup_keys_) k.id = std::max(k.id, o.id + 1);
  Status s = persist([&](Store& st) { return st.put_setup_key(k.id, k.hash, dump_json(k.to_json())); },
                     Changes{}, Event{0, now, who.actor, "setup-key.create", k.name, k.to_json()});
  if (!s) return send_error(res, from_status(s));
  setup_keys_.push_back(k);
  Json out = k.to_json();
  out["key"] = format_setup_key(secret, coord_pub_);
  wipe(secret);
  send_json(res, 201, out);
}

void Coordinator::h_keys_list(const httplib::Request& req, httplib::Response& res) {
  if (!auth_admin(req, res)) return;
  std::shared_lock lk(mu_);
  Json a = Json::array();
  int64_t now = unix_now();
  for (const auto& k : setup_keys_) {
    Json j = k.to_json();
    std::string why = k.unusable_reason(now);
    j["usable"] = why.empty();
    if (!why.empty()) j["unusable_reason"] = why;
    a.push_back(j);
  }
  send_json(res, 200, Json{{"setup_keys", a}});
}

void Coordinator::h_keys_revoke(const httplib::Request& req, httplib::Response& res) {
  Caller who;
  if (!auth_admin(req, res, &who)) return;
  auto j = json_body(req, 4096);
  if (!j) return send_error(res, from_status(j.status()));
  auto ref = parse_revoke_request(*j);
  if (!ref) return send_error(res, from_status(ref.status()));
  WriteLock lk(*this);
  if (!lk) return send_error(res, from_status(lk.status()));
  for (auto& k : setup_keys_) {
    if (k.name != *ref && std::to_string(k.id) != *ref) continue;
    SetupKey copy = k;
    copy.revoked = true;
    int64_t now = unix_now();
    Status s = persist([&](Store& st) { return st.put_setup_key(copy.id, copy.hash, dump_json(copy.to_json())); },
                       Changes{}, Event{0, now, who.actor, "setup-key.revoke", copy.name, Json::object()});
    if (!s) return send_error(res, from_status(s));
    k.revoked = true;
    return send_json(res, 200, k.to_json());
  }
  send_error(res, {404, "request: key: no setup key named '" + *ref + "'", "key"});
}

void Coordinator::h_peers_list(const httplib::Request& req, httplib::Response& res) {
  Caller who;
  if (!auth_admin(req, res, &who)) return;
  std::shared_lock lk(mu_);
  Json a = Json::array();
  for (const Peer* p : model_.peers())
    if (who.admin || p->owner == who.subject) a.push_back(p->to_json());
  send_json(res, 200, Json{{"peers", a}});
}

Status Coordinator::delete_peer_locked(Peer& p, const std::string& actor, const std::string& why) {
  int64_t now = unix_now();
  uint32_t id = p.id;
  std::string name = p.name;
  Json detail{{"public_key", p.public_key.to_base64()}, {"reason", why}};
  // The credentials it holds stay good on the relays until their EXPIRY:
  // publish their subject to relays that follow /v1/relay/revoked.
  bool relays = !model_.config().relay_secret.empty() && !model_.config().turn.empty();
  if (relays) {
    revoked_.prune(now);
    revoked_.add(relay_subject(name, id), model_.credential_expiry());
  }
  std::string rev_text = dump_json(revoked_.to_json());
  Changes ch = model_.remove_peer(id, now);
  detail["maps_changed"] = ch.changed.size();
  return persist(
      [&](Store& st) {
        MESH_TRY(st.delete_peer(id));
        return relays ? st.set_meta("relay_revocations", rev_text) : Status::ok();
      },
      ch, Event{0, now, actor, "peer.delete", name, detail});
}

// GET /v1/relay/revoked?after=SEQ&wait=S, for mesh-relay serve
// --revocations: the subjects of deleted peers' relay credentials, as a
// long-poll like /v1/map. Authenticated by the relay secret (relays hold no
// other credential); see coord/revoked.h.
void Coordinator::h_relay_revoked(const httplib::Request& req, httplib::Response& res) {
  std::string secret;
  struct Wipe {
    std::string& s;
    ~Wipe() { wipe(s); }
  } wiped{secret};
  {
    std::shared_lock lk(mu_);
    secret = model_.config().relay_secret;
  }
  if (secret.empty()) return send_error(res, {404, "no relay secret configured (--relay-secret-file)"});
  int64_t after = 0;
  int wait = 0;
  try {
    if (req.has_param("after")) after = std::stoll(req.get_param_value("after"));
    if (req.has_param("wait")) wait = std::stoi(req.get_param_value("wait"));
  } catch (const std::exception&) {
    return send_error(res, {400, "request: after/wait: expected integers", "after"});
  }
  if (after < 0 || wait < 0 || wait > 60)
    return send_error(res, {400, "request: after must be >= 0 and wait 0-60", "after"});
  int64_t ts = 0;
  Status auth = check_revocation_request(secret, req.get_header_value(kRevocationAuthHeader),
                                         unix_now(), after, wait, &ts);
  if (!auth) {
    ++auth_failures_;
    return send_error(res, {401, "relay authentication: " + auth.message()});
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait);
  std::shared_lock lk(mu_);
  while (!stopping_ && revoked_.seq() == after && std::chrono::steady_clock::now() < deadline) {
    uint64_t seen = wake_.generation(0);
    lk.unlock();
    wake_.wait_until(0, seen, deadline);
    lk.lock();
  }
  std::string body = dump_json(revoked_.since(after)) + "\n";
  lk.unlock();
  res.set_header(kRevocationMacHeader, revocation_response_mac(secret, ts, body));
  res.set_content(std::move(body), "application/json");
}

void Coordinator::h_peer_op(const httplib::Request& req, httplib::Response& res,
                            const std::string& op) {
  Caller who;
  if (!auth_admin(req, res, &who)) return;
  auto j = json_body(req, 65536);
  if (!j) return send_error(res, from_status(j.status()));
  auto body = parse_peer_op_request(*j, op);
  if (!body) return send_error(res, from_status(body.status()));
  const std::string* ref = &body->peer;
  const std::string& new_name = body->name;
  const std::vector<std::string>& groups = body->groups;
  int64_t now = unix_now();
  WriteLock lk(*this);
  if (!lk) return send_error(res, from_status(lk.status()));
  Peer* p = model_.find(*ref);
  // A user without admin rights sees only their own peers.
  if (!p || (!who.admin && p->owner != who.subject))
    return send_error(res, {404, "request: peer: no peer '" + *ref + "'", "peer"});
  if (op == "show") {
    Json out = p->to_json();
    Json vis = Json::array();
    for (uint32_t id : model_.visible(p->id)) vis.push_back(model_.by_id(id)->name);
    out["visible_peers"] = vis;
    return send_json(res, 200, out);
  }
  uint32_t id = p->id;
  std::string name = p->name;
  if (op == "delete") {
    Status s = delete_peer_locked(*p, who.actor, "deleted by " + who.actor);
    if (!s) return send_error(res, from_status(s));
    lk.unlock();
    publish();
    return send_json(res, 200, Json{{"deleted", name}});
  }
  Changes ch;
  Json detail = Json::object();
  if (op == "rename") {
    if (new_name != name && model_.by_name(new_name))
      return send_error(res, {409, "request: name: peer name '" + new_name + "' is already in use", "name"});
    ch = model_.rename_peer(id, new_name, now);
    detail = {{"from", name}, {"to", new_name}};
  } else if (op == "set-groups") {
    detail = {{"from", p->groups}, {"to", groups}};
    ch = model_.update_peer(id, true, now, [&](Peer& q) { q.groups = groups; });
  } else if (op == "disable" || op == "enable") {
    bool dis = op == "disable";
    ch = model_.update_peer(id, true, now, [&](Peer& q) { q.disabled = dis; });
  } else {
    return send_error(res, {404, "unknown operation"});
  }
  detail["maps_changed"] = ch.changed.size();
  std::string record = dump_json(p->to_record());
  std::string key = p->public_key.to_base64();
  std::string cur = p->name;
  Status s = persist([&](Store& st) { return st.put_peer(id, cur, key, record); }, ch,
                     Event{0, now, who.actor, "peer." + op, name, detail});
  if (!s) return send_error(res, from_status(s));
  Json out = model_.by_id(id)->to_json();
  lk.unlock();
  publish();
  send_json(res, 200, out);
}

void Coordinator::h_policy_get(const httplib::Request& req, httplib::Response& res) {
  if (!auth_admin(req, res)) return;
  std::shared_lock lk(mu_);
  send_json(res, 200, policy_to_json(model_.policy()));
}

void Coordinator::h_policy_set(const httplib::Request& req, httplib::Response& res) {
  Caller who;
  if (!auth_admin(req, res, &who)) return;
  auto j = json_body(req, opt_.max_body);
  if (!j) return send_error(res, from_status(j.status()));
  auto pol = parse_policy(*j, "request");
  if (!pol) return send_error(res, from_status(pol.status()));
  int64_t now = unix_now();
  WriteLock lk(*this);
  if (!lk) return send_error(res, from_status(lk.status()));
  if (Status s = check_policy_routes(model_, *pol); !s) return send_error(res, from_status(s));
  if (Status s = model_.run_tests(*pol); !s)
    return send_error(res, {422, "policy tests failed: " + s.message(), "tests"});
  std::string text = dump_json(policy_to_json(*pol));
  Json detail{{"rules", pol->rules.size()}, {"groups", pol->groups.size()}, {"tests", pol->tests.size()}};
  Changes ch = model_.set_policy(std::move(*pol), now);
  detail["maps_changed"] = ch.changed.size();
  detail["recompute_ms"] = model_.stats().last_full_recompute_ms;
  Status s = persist([&](Store& st) { return st.set_meta("policy", text); }, ch,
                     Event{0, now, who.actor, "policy.set", "policy", detail});
  if (!s) return send_error(res, from_status(s));
  lk.unlock();
  publish();
  send_json(res, 200, detail);
}

void Coordinator::h_policy_check(const httplib::Request& req, httplib::Response& res) {
  if (!auth_admin(req, res)) return;
  auto j = json_body(req, 4096);
  if (!j) return send_error(res, from_status(j.status()));
  auto body = parse_policy_check_request(*j);
  if (!body) return send_error(res, from_status(body.status()));
  const std::string* from = &body->from;
  const std::string* to = &body->to;
  const Service* svc = &body->service;
  std::shared_lock lk(mu_);
  auto a = model_.resolve_test_party(*from);
  if (!a) return send_error(res, {404, "request: from: " + a.status().message(), "from"});
  Verdict vd;
  if (to->rfind("route:", 0) == 0) {
    const Route* r = model_.find_route(to->substr(6));
    if (!r) return send_error(res, {404, "request: to: unknown route '" + to->substr(6) + "'", "to"});
    vd = model_.evaluate_route(model_.policy(), *a, *r, *svc);
  } else {
    auto b = model_.resolve_test_party(*to);
    if (!b) return send_error(res, {404, "request: to: " + b.status().message(), "to"});
    vd = evaluate(model_.policy(), *a, *b, *svc);
  }
  send_json(res, 200,
            Json{{"from", *from}, {"to", *to}, {"port", svc->to_string()},
                 {"verdict", vd.allow ? "allow" : "deny"}, {"rule", vd.rule}});
}

void Coordinator::h_policy_plan(const httplib::Request& req, httplib::Response& res) {
  if (!auth_admin(req, res)) return;
  auto j = json_body(req, opt_.max_body);
  if (!j) return send_error(res, from_status(j.status()));
  auto pol = parse_policy(*j, "request");
  if (!pol) return send_error(res, from_status(pol.status()));
  std::shared_lock lk(mu_);
  Json out = Json::object();
  Status tests = check_policy_routes(model_, *pol);
  if (tests) tests = model_.run_tests(*pol);
  out["tests"] = tests ? Json("pass") : Json(tests.message());
  Model::Plan plan = model_.plan(*pol);
  for (auto [key, list] : {std::pair{"gained", &plan.gained}, std::pair{"lost", &plan.lost}}) {
    Json a = Json::array();
    for (const auto& e : *list) a.push_back({{"src", e.src}, {"dst", e.dst}, {"service", e.service}});
    out[key] = a;
  }
  send_json(res, 200, out);
}

// /v1/admin/routes (list) and /v1/admin/routes/OP: the logic is
// route_op (coord/routeops.h); here the lock, the transaction and the push.
void Coordinator::h_route_op(const httplib::Request& req, httplib::Response& res,
                             const std::string& op) {
  if (!auth_admin(req, res)) return;
  Json body = Json::object();
  if (op != "list") {
    auto j = json_body(req, 65536);
    if (!j) return send_error(res, from_status(j.status()));
    body = std::move(*j);
  }
  int64_t now = unix_now();
  WriteLock lk(*this);
  if (!lk) return send_error(res, from_status(lk.status()));
  auto r = route_op(model_, op, body, now);
  if (!r) return send_error(res, from_status(r.status()));
  if (r->write) {
    Status s = persist(
        [&](Store& st) {
          return r->erase ? st.delete_record("route", r->name)
                          : st.put_record("route", r->name, r->record);
        },
        r->changes, Event{0, now, "admin", "route." + op, r->name, r->detail});
    if (!s) return send_error(res, from_status(s));
  }
  lk.unlock();
  if (r->write) publish();
  send_json(res, 200, r->response);
}

void Coordinator::h_events(const httplib::Request& req, httplib::Response& res) {
  if (!auth_admin(req, res)) return;
  int64_t after = 0, limit = 1000;
  try {
    if (req.has_param("after")) after = std::stoll(req.get_param_value("after"));
    if (req.has_param("limit")) limit = std::clamp<int64_t>(std::stoll(req.get_param_value("limit")), 1, 100000);
  } catch (const std::exception&) {
    return send_error(res, {400, "request: after/limit: expected integers", "after"});
  }
  std::string action = req.has_param("action") ? req.get_param_value("action") : "";
  std::lock_guard lk(store_mu_);
  auto evs = store_->events(after, limit, action);
  if (!evs) return send_error(res, from_status(evs.status()));
  Json a = Json::array();
  for (const auto& e : *evs) a.push_back(e.to_json());
  send_json(res, 200, Json{{"events", a}});
}

void Coordinator::h_metrics(const httplib::Request& req, httplib::Response& res) {
  if (!opt_.public_metrics && !auth_admin(req, res)) return;
  std::ostringstream o;
  size_t enabled = 0, disabled = 0;
  Model::Stats st;
  uint64_t serial;
  size_t keys;
  {
    std::shared_lock lk(mu_);
    for (const Peer* p : model_.peers()) (p->disabled ? disabled : enabled)++;
    st = model_.stats();
    serial = model_.serial_counter();
    keys = setup_keys_.size();
  }
  auto g = [&](const char* name, const char* help, const char* type, auto value,
               const std::string& labels = "") {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
      << name << labels << " " << value << "\n";
  };
  o << "# HELP mesh_coord_peers Enrolled peers.\n# TYPE mesh_coord_peers gauge\n"
    << "mesh_coord_peers{state=\"enabled\"} " << enabled << "\n"
    << "mesh_coord_peers{state=\"disabled\"} " << disabled << "\n";
  g("mesh_coord_watchers", "Long-poll watchers currently waiting for a map.", "gauge", watchers_.load());
  g("mesh_coord_watch_wakeups_total", "Times a waiting long-poll was woken to check for news.", "counter", watch_wakeups_.load());
  g("mesh_coord_threads", "Connection threads.", "gauge", guard_ && guard_->pool() ? guard_->pool()->threads() : 0);
  g("mesh_coord_connections", "Open connections.", "gauge", guard_ ? guard_->connections() : 0);
  g("mesh_coord_connections_refused_total", "Connections refused by a connection limit.", "counter", guard_ ? guard_->refused() : 0);
  g("mesh_coord_setup_keys", "Setup keys (any state).", "gauge", keys);
  g("mesh_coord_map_serial", "Latest map serial.", "counter", serial);
  g("mesh_coord_map_computations_total", "Per-peer map digest computations.", "counter", st.map_computations);
  g("mesh_coord_full_recomputes_total", "Full recomputes (policy changes, credential refresh).", "counter", st.full_recomputes);
  g("mesh_coord_incremental_recomputes_total", "Incremental recomputes.", "counter", st.incremental_recomputes);
  g("mesh_coord_last_full_recompute_seconds", "Duration of the last full recompute.", "gauge", st.last_full_recompute_ms / 1000.0);
  g("mesh_coord_last_incremental_recompute_seconds", "Duration of the last incremental recompute.", "gauge", st.last_incremental_ms / 1000.0);
  g("mesh_coord_maps_served_total", "Maps sent to peers (whole or as deltas).", "counter", maps_served_.load());
  g("mesh_coord_map_deltas_total", "Maps sent as deltas (mesh-netmap(5), Deltas).", "counter", deltas_served_.load());
  g("mesh_coord_map_bytes_total", "Bytes of the maps and deltas sent, before sealing.", "counter", map_bytes_.load());
  g("mesh_coord_map_build_seconds_total", "CPU time spent building map JSON.", "counter", map_build_us_.load() / 1e6);
  g("mesh_coord_map_changes_total", "Per-peer map changes pushed.", "counter", pushes_.load());
  g("mesh_coord_requests_total", "HTTP requests.", "counter", requests_.load());
  g("mesh_coord_auth_failures_total", "Failed authentications (peer signatures, admin tokens, setup keys).", "counter", auth_failures_.load());
  g("mesh_coord_rate_limited_total", "Requests refused by a rate limit (authentication failures, punch requests).", "counter", rate_limited_.load());
  g("mesh_coord_nonces", "Nonces remembered for replay protection.", "gauge", nonces_.size());
  g("mesh_coord_join_nonces", "Nonces of join requests remembered for replay protection.", "gauge", join_nonces_.size());
  g("mesh_coord_punch_pending", "Punch requests waiting for their target's watcher.", "gauge", punches_.size());
  size_t logins_pending = 0;
  {
    std::lock_guard plk(pending_mu_);
    logins_pending = pending_logins_.size();
  }
  g("mesh_coord_logins_pending", "Device logins the coordinator runs (client secret), waiting for their person.", "gauge", logins_pending);
  g("mesh_coord_punch_queued_total", "Punch requests queued.", "counter", punches_queued_.load());
  g("mesh_coord_punch_delivered_total", "Punch requests delivered to watchers.", "counter", punches_delivered_.load());
  res.set_content(o.str(), "text/plain; version=0.0.4");
}

void Coordinator::routes(httplib::Server& s) {
  using Req = const httplib::Request&;
  using Res = httplib::Response&;
  auto wrap = [this](auto fn) {
    return [this, fn](Req req, Res res) {
      ++requests_;
      try {
        (this->*fn)(req, res);
      } catch (const std::exception& e) {
        log_.error(std::string("internal error: ") + e.what());
        send_error(res, {500, std::string("internal error: ") + e.what()});
      }
    };
  };
  s.Get("/v1/info", wrap(&Coordinator::h_info));
  s.Get("/healthz", [](Req, Res res) { res.set_content("ok\n", "text/plain"); });
  // Every refused join (bad signature, bad body, unknown key, name in use)
  // counts against its source: join requests can be signed with self-made
  // keys, so nothing else bounds how many a source may try.
  s.Post("/v1/join", [this, join = wrap(&Coordinator::h_join)](Req req, Res res) {
    join(req, res);
    if (res.status >= 400 && res.status < 500 && res.status != 429)
      limiter_.failed(source_key(req.remote_addr), unix_now());
  });
  s.Post("/v1/login", [this, login = wrap(&Coordinator::h_login)](Req req, Res res) {
    login(req, res);
    if (res.status >= 400 && res.status < 500 && res.status != 429)
      limiter_.failed(source_key(req.remote_addr), unix_now());
  });
  s.Post("/v1/login/device", [this, start = wrap(&Coordinator::h_login_device)](Req req, Res res) {
    start(req, res);
    if (res.status >= 400 && res.status < 500 && res.status != 429)
      limiter_.failed(source_key(req.remote_addr), unix_now());
  });
  s.Get("/v1/admin/users", wrap(&Coordinator::h_users_list));
  for (std::string op : {"show", "disable", "enable", "delete"})
    s.Post("/v1/admin/users/" + op, [this, op](Req req, Res res) {
      ++requests_;
      try {
        h_user_op(req, res, op);
      } catch (const std::exception& e) {
        send_error(res, {500, std::string("internal error: ") + e.what()});
      }
    });
  s.Get("/v1/map", wrap(&Coordinator::h_map));
  s.Post("/v1/endpoints", wrap(&Coordinator::h_announce));
  s.Post("/v1/punch", wrap(&Coordinator::h_punch));
  s.Post("/v1/rotate-key", wrap(&Coordinator::h_rotate_key));
  s.Get("/v1/self", wrap(&Coordinator::h_self));
  s.Get("/v1/admin/setup-keys", wrap(&Coordinator::h_keys_list));
  s.Post("/v1/admin/setup-keys", wrap(&Coordinator::h_keys_create));
  s.Post("/v1/admin/setup-keys/revoke", wrap(&Coordinator::h_keys_revoke));
  s.Get("/v1/admin/peers", wrap(&Coordinator::h_peers_list));
  for (std::string op : {"show", "rename", "set-groups", "disable", "enable", "delete"})
    s.Post("/v1/admin/peers/" + op, [this, op](Req req, Res res) {
      ++requests_;
      try {
        h_peer_op(req, res, op);
      } catch (const std::exception& e) {
        send_error(res, {500, std::string("internal error: ") + e.what()});
      }
    });
  s.Get("/v1/admin/policy", wrap(&Coordinator::h_policy_get));
  s.Put("/v1/admin/policy", wrap(&Coordinator::h_policy_set));
  s.Post("/v1/admin/policy/check", wrap(&Coordinator::h_policy_check));
  s.Post("/v1/admin/policy/plan", wrap(&Coordinator::h_policy_plan));
  for (std::string op : {"list", "show", "create", "update", "delete"}) {
    auto h = [this, op](Req req, Res res) {
      ++requests_;
      try {
        h_route_op(req, res, op);
      } catch (const std::exception& e) {
        send_error(res, {500, std::string("internal error: ") + e.what()});
      }
    };
    if (op == "list") s.Get("/v1/admin/routes", h);
    else s.Post("/v1/admin/routes/" + op, h);
  }
  s.Get("/v1/admin/events", wrap(&Coordinator::h_events));
  s.Get("/metrics", wrap(&Coordinator::h_metrics));
  s.Get("/v1/relay/revoked", wrap(&Coordinator::h_relay_revoked));
  s.set_error_handler([](Req req, Res res) {
    if (!res.body.empty()) return;
    if (res.status == 413)
      send_error(res, {413, "request: body too large", ""});
    else if (res.status == 404)
      send_error(res, {404, "no such endpoint: " + req.method + " " + req.path});
    else if (res.status == 405)
      send_error(res, {405, "method not allowed: " + req.method + " " + req.path});
    else
      send_error(res, {res.status, "HTTP error " + std::to_string(res.status)});
  });
}

// The audit table is bounded by age and count (--audit-max-age,
// --audit-max-events): announces and failed joins add rows at the pace
// peers and strangers choose.
void Coordinator::prune_audit(int64_t now) {
  if (opt_.audit_max_age <= 0 && opt_.audit_max_events <= 0) return;
  std::lock_guard lk(store_mu_);
  auto n = store_->prune_events(opt_.audit_max_age > 0 ? now - opt_.audit_max_age : 0,
                                opt_.audit_max_events);
  if (!n) log_.error("cannot prune the audit events: " + n.status().message());
  // Replicas down longer than the change log is kept reload everything.
  if (store_->shared() && now % 60 < opt_.janitor_interval) {
    auto c = store_->prune_changes(now - kChangeLogSeconds);
    if (!c) log_.error("cannot prune the change log: " + c.status().message());
  }
}

// A long-poll is one request, however long it waits: its peer is active
// while it waits.
void Coordinator::touch_watchers(int64_t now) {
  std::vector<PublicKey> keys;
  for (const auto& who : watches_.holders())
    if (auto k = PublicKey::from_base64(who)) keys.push_back(*k);
  std::shared_lock lk(mu_);
  for (const auto& k : keys)
    if (Peer* p = model_.by_key(k)) p->last_seen = std::max(p->last_seen.load(), now);
}

// Batched, once per sweep: only the ephemeral peers seen since the last
// one, in one statement (no store write per request).
void Coordinator::share_last_seen(int64_t now) {
  std::vector<std::pair<int64_t, int64_t>> rows;
  {
    std::shared_lock lk(mu_);
    for (const Peer* p : model_.peers())
      if (p->ephemeral && p->last_seen.load() >= seen_shared_at_)
        rows.emplace_back(p->id, p->last_seen.load());
  }
  if (!rows.empty()) {
    std::lock_guard lk(store_mu_);
    if (Status s = store_->put_last_seen(rows); !s) {
      log_.error("cannot share when peers were last seen: " + s.message());
      return;  // again at the next sweep
    }
  }
  seen_shared_at_ = now;
}

// With the WriteLock held: a peer idle here may be active on another
// replica, which shares its last_seen at every sweep, so the shared time
// may lag by one interval: it gets that much grace. When that cannot be
// read, nothing is deleted this time.
void Coordinator::keep_seen_elsewhere(std::vector<uint32_t>& stale, int64_t now) {
  if (stale.empty() || !store_->shared()) return;
  auto seen = store_->last_seen(std::vector<int64_t>(stale.begin(), stale.end()));
  if (!seen) {
    log_.error("cannot read when peers were last seen: " + seen.status().message());
    stale.clear();
    return;
  }
  auto recent = [&](uint32_t id) {
    auto it = seen->find(id);
    const Peer* p = model_.by_id(id);
    return it != seen->end() && p &&
           now - it->second <= p->ephemeral_timeout + opt_.janitor_interval;
  };
  stale.erase(std::remove_if(stale.begin(), stale.end(), recent), stale.end());
}

// Ephemeral peers idle past their timeout are deleted; relay credentials
// are re-minted at half their lifetime (which bumps every map's serial).
// Every replica sweeps, one at a time (the WriteLock), deciding on the
// latest last_seen any replica shared.
void Coordinator::janitor(const std::atomic<bool>& stop) {
  int64_t last = 0;
  int64_t folded_at = mono_ms(), change_at = folded_at, seen = applied_change_;
  while (!stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    int64_t now = unix_now();
    // The newest change applied tells when the log last moved.
    if (int64_t t = mono_ms(), c = applied_change_; fold_store_) {
      if (c != seen) seen = c, change_at = t;
      if (fold_due(t, folded_at, change_at)) {
        folded_at = t;
        if (Status f = fold_store_->fold_serials(); !f)
          log_.error("cannot fold the change log's map serials: " + f.message());
      }
    }
    // Expired logins leave every map at once, not at the next sweep.
    if (now >= next_expiry_.load() && expire_due_logins(now)) publish();
    if (now - last < opt_.janitor_interval) continue;
    last = now;
    // Expired punch requests of peers that never collected them.
    punches_.prune(mono_ms());
    punch_limiter_.prune(mono_ms());
    announce_limiter_.prune(mono_ms());
    prune_audit(now);  // keeps the changes whose serials are not folded yet
    touch_watchers(now);
    if (store_->shared()) share_last_seen(now);
    bool changed = false;
    {
      WriteLock lk(*this);
      if (!lk) {
        log_.error(lk.status().message());
        continue;
      }
      std::vector<uint32_t> stale;
      for (const Peer* p : model_.peers())
        if (p->ephemeral && now - p->last_seen.load() > p->ephemeral_timeout) stale.push_back(p->id);
      keep_seen_elsewhere(stale, now);
      for (uint32_t id : stale) {
        Peer* p = model_.by_id(id);
        Status s = delete_peer_locked(*p, "system", "ephemeral peer inactive");
        if (!s) log_.error(s.message());
        changed = true;
      }
      int64_t prev = model_.cred_window();
      Changes ch = model_.tick_credentials(now);
      if (model_.cred_window() != prev) {
        Status s = persist([](Store&) { return Status::ok(); }, ch,
                           Event{0, now, "system", ch.serial ? "credentials.refresh" : "", "",
                                 Json{{"maps_changed", ch.changed.size()}}});
        if (!s) log_.error(s.message());
        changed = changed || ch.serial != 0;
      }
    }
    if (changed) publish();
  }
}

// ------------------------------------------------------------------ login (coord/users.h)

// One transaction: the user record (when given), the peers' records, the
// new map serials and the audit event.
Status Coordinator::put_peers(Store& st, const std::vector<uint32_t>& ids, const User* user) {
  for (uint32_t id : ids)
    if (const Peer* p = model_.by_id(id))
      MESH_TRY(st.put_peer(id, p->name, p->public_key.to_base64(), dump_json(p->to_record())));
  return user ? st.put_record("user", user->subject, dump_json(user->to_json())) : Status::ok();
}

Status Coordinator::persist_peers(const std::vector<uint32_t>& ids, const User* user,
                                  const Changes& ch, const Event& ev) {
  return persist([&](Store& st) { return put_peers(st, ids, user); }, ch, ev);
}

static void merge(Changes& into, const Changes& ch) {
  if (ch.serial) into.serial = ch.serial;
  into.changed.insert(into.changed.end(), ch.changed.begin(), ch.changed.end());
}

// POST /v1/login/device: a device flow run with the coordinator's secret
// (RFC 8628 3.1-3.2). The node gets what a person needs and a handle to
// poll /v1/login with; the device code stays here.
void Coordinator::h_login_device(const httplib::Request& req, httplib::Response& res) {
  auto a = auth_peer(req, false, nullptr);
  if (!a) return auth_error(req, res, a.status());
  if (!issuer_)
    return peer_error(&*a, res, {404, "login is not enabled on this coordinator (serve --oidc-issuer)"});
  if (oidc_client_.secret.empty())
    return peer_error(&*a, res, {404, "this coordinator holds no client secret: run the device flow at "
                                      "the identity provider (mesh-coord login does)"});
  auto j = json_body(*a, 4096);
  if (!j) return peer_error(&*a, res, from_status(j.status()));
  JsonView v(*j, "request");
  std::string scope = "openid email profile groups";
  if (Status s = v.check_keys({"scope"}); !s) return peer_error(&*a, res, from_status(s));
  if (JsonView f = v; v.optional_field("scope", &f)) {
    auto sc = f.as_string();
    if (!sc || sc->size() > 512) return peer_error(&*a, res, {400, "request: scope: expected a string of at most 512 bytes", "scope"});
    scope = *sc;
  }
  int64_t now = unix_now();
  {
    // Refuse before asking the provider when this source is at its bound.
    std::lock_guard lk(pending_mu_);
    if (Status s = pending_logins_.room_for(a->key, source_key(req.remote_addr), now); !s)
      return peer_error(&*a, res, from_status(s));
  }
  auto disc = issuer_->discovery();
  if (!disc) return peer_error(&*a, res, from_status(disc.status()));
  auto da = oauth::start_device(*disc, oidc_client_, scope, opt_.oidc_ca_file);
  if (!da) return peer_error(&*a, res, from_status(da.status()));
  Json out = da->prompt();
  out["interval"] = da->interval;
  std::lock_guard lk(pending_mu_);
  auto handle = pending_logins_.add(a->key, source_key(req.remote_addr), std::move(*da), now);
  if (!handle) return peer_error(&*a, res, from_status(handle.status()));
  out["device_handle"] = *handle;
  send_json(res, 200, out);
  sign(*a, res);
}

Result<std::optional<std::string>> Coordinator::login_token(const PeerAuth& a, const LoginRequest& body,
                                                            httplib::Response& res) {
  if (body.device_handle.empty() && body.code.empty()) return std::optional(body.enrol.setup_key);
  if (oidc_client_.secret.empty())
    return Status(Exit::NoInput, "this coordinator holds no client secret: send the ID token");
  MESH_ASSIGN(auto disc, issuer_->discovery());
  if (!body.code.empty()) {
    if (!oauth::loopback_redirect_uri(body.redirect_uri))
      return data_error("request: redirect_uri: not a loopback redirect (http://127.0.0.1:PORT/...)");
    MESH_ASSIGN(auto t, oauth::exchange_code(disc, oidc_client_, body.code, body.code_verifier,
                                             body.redirect_uri, opt_.oidc_ca_file));
    return std::optional(std::move(t));
  }
  int64_t now = unix_now();
  std::string device_code;
  {
    std::lock_guard lk(pending_mu_);
    oauth::PendingLogin* p = pending_logins_.find(body.device_handle, a.key, now);
    if (!p) return Status(Exit::NoInput, "no such login in progress (unknown, expired or another node's)");
    // The provider's interval is kept whatever the node's pace (RFC 8628 3.5).
    if (now < p->next_poll_at) {
      send_json(res, 202, Json{{"status", "authorization_pending"}, {"interval", p->auth.interval}});
      return std::optional<std::string>();
    }
    p->next_poll_at = now + p->auth.interval;
    device_code = p->auth.device_code;
  }
  auto poll = oauth::poll_device(disc, oidc_client_, device_code, opt_.oidc_ca_file);
  std::lock_guard lk(pending_mu_);
  oauth::PendingLogin* p = pending_logins_.find(body.device_handle, a.key, now);
  // A provider that cannot be reached (or answers 5xx) now may at the next
  // poll: the login stays pending (a 503 would send the node to another
  // replica, which does not know the handle), bounded by its expiry.
  bool transient = !poll && poll.status().code() == Exit::Unavailable;
  if (transient) log_.warn("oidc: device login poll: " + poll.status().message());
  // Done, denied or expired: one token per handle.
  if (!transient && (!poll || !poll->id_token.empty())) {
    if (p) pending_logins_.erase(body.device_handle);
    if (!poll) return poll.status();
    return std::optional(std::move(poll->id_token));
  }
  if (p && poll && poll->slow_down) p->auth.interval += 5;
  send_json(res, 202, Json{{"status", "authorization_pending"}, {"interval", p ? p->auth.interval : 5}});
  return std::optional<std::string>();
}

// POST /v1/login: enrolment (or renewal) with an ID token instead of a setup
// key, signed like a join. The token is verified before any lock is taken
// (it may need the IdP's keys fetched).
void Coordinator::h_login(const httplib::Request& req, httplib::Response& res) {
  auto a = auth_peer(req, false, nullptr);
  if (!a) return auth_error(req, res, a.status());
  if (!issuer_)
    return peer_error(&*a, res, {404, "login is not enabled on this coordinator (serve --oidc-issuer)"});
  auto j = json_body(*a, 131072);
  if (!j) return peer_error(&*a, res, from_status(j.status()));
  auto body = parse_login_request(*j);
  if (!body) return peer_error(&*a, res, from_status(body.status()));
  auto token = login_token(*a, *body, res);
  wipe(body->enrol.setup_key);
  if (token && !*token) return sign(*a, res);  // pending
  if (!token) {
    const Status& e = token.status();
    if (e.code() != Exit::NoPerm) return peer_error(&*a, res, from_status(e));
    std::string m = e.message().rfind("login ", 0) == 0 ? e.message() : "login refused: " + e.message();
    return peer_error(&*a, res, {401, m});
  }
  int64_t now = unix_now();
  std::optional<std::string> nonce;
  if (!body->nonce.empty()) nonce = body->nonce;
  auto ident = issuer_->verify(**token, now, nonce);
  std::string token_hash = sha256_hex(**token);
  wipe(**token);
  if (!ident) {
    ++auth_failures_;
    (void)record_event(Event{0, now, "remote:" + req.remote_addr, "auth.failed", "login",
                             Json{{"reason", ident.status().message()},
                                  {"public_key", a->key.to_base64()}}});
    int http = ident.status().code() == Exit::Unavailable ? 503 : 401;
    return peer_error(&*a, res, {http, "login refused: " + ident.status().message(), "id_token"});
  }
  WriteLock lk(*this);
  if (!lk) return peer_error(&*a, res, from_status(lk.status()));
  // Kept a minute past expiry: the clock skew verification allows.
  std::vector<std::string> stale;
  for (const auto& [h, e] : used_tokens_)
    if (e.second + 60 < now) stale.push_back(h);
  for (const auto& h : stale) used_tokens_.erase(h);
  if (auto it = used_tokens_.find(token_hash); it != used_tokens_.end() && it->second.first != a->key)
    return peer_error(&*a, res, {401, "login refused: this ID token already enrolled another node key", "id_token"});
  used_tokens_[token_hash] = {a->key, ident->expires_at};
  User u = user_after_login(users_, *ident, now);
  std::string actor = "user:" + (u.email.empty() ? u.subject : u.email);
  if (u.disabled) {
    lk.unlock();
    (void)record_event(Event{0, now, actor, "auth.failed", "login", Json{{"reason", "user is disabled"}}});
    return peer_error(&*a, res, {403, "login refused: user '" + actor.substr(5) + "' is disabled"});
  }
  Peer* p = model_.by_key(a->key);
  if (p && p->owner != u.subject)
    return peer_error(&*a, res, {403, "login refused: this node key is enrolled as '" + p->name +
                                          "' by " + (p->owner.empty() ? "a setup key" : "another user")});
  if (p && p->disabled) return peer_error(&*a, res, {403, "peer is disabled"});
  int64_t expires = opt_.login_expiry > 0 ? now + opt_.login_expiry : 0;
  std::vector<uint32_t> touched;
  Changes ch;
  bool created = !p;
  uint32_t id = 0;
  if (p) {
    id = p->id;
    ch = model_.update_peer(id, true, now, [&](Peer& q) {
      q.login_expires_at = expires;
      q.login_expired = false;
    });
  } else {
    id = model_.new_peer_id();
    std::string name;
    if (auto e = choose_name(SetupKey{}, body->enrol, id, &name)) return peer_error(&*a, res, *e);
    auto host = model_.allocate_host();
    if (!host) return peer_error(&*a, res, from_status(host.status(), 507));
    auto np = std::make_unique<Peer>();
    np->id = id;
    np->name = name;
    np->public_key = a->key;
    np->host_index = *host;
    np->ipv4 = model_.host_v4(*host);
    np->ipv6 = model_.host_v6(*host);
    np->listen_port = model_.pick_listen_port(id);
    np->created_at = now;
    np->last_seen = now;
    np->owner = u.subject;
    np->owner_email = u.email;
    np->idp_groups = u.groups;
    np->login_expires_at = expires;
    ch = model_.add_peer(std::move(np), now);
  }
  touched.push_back(id);
  users_[u.subject] = u;
  // Every peer of this user follows the groups of this login.
  merge(ch, sync_user_peers(model_, u, now, &touched));
  if (expires > 0 && (next_expiry_.load() == 0 || expires < next_expiry_.load())) next_expiry_ = expires;
  const Peer& me = *model_.by_id(id);
  Json detail{{"public_key", a->key.to_base64()}, {"subject", u.subject}, {"groups", u.groups},
              {"login_expires_at", expires}, {"maps_changed", ch.changed.size()}};
  Json used{{"public_key", a->key.to_base64()}, {"expires_at", ident->expires_at}};
  Status s = persist(
      [&](Store& st) {
        for (const auto& h : stale) MESH_TRY(st.delete_record("id-token", h));
        MESH_TRY(st.put_record("id-token", token_hash, dump_json(used)));
        return put_peers(st, touched, &u);
      },
      ch, Event{0, now, actor, created ? "peer.join" : "peer.login", me.name, detail});
  if (!s) return peer_error(&*a, res, from_status(s));
  Json reg = registration(me);
  reg["user"] = {{"subject", u.subject}, {"email", u.email}, {"name", u.name}, {"groups", u.groups}};
  reg["login_expires_at"] = expires;
  lk.unlock();
  publish();
  send_json(res, created ? 201 : 200, reg);
  sign(*a, res);
}

// An admin request's bearer that is an ID token of the issuer: its user,
// unless disabled; an admin when in --oidc-admin-group. Called before any
// lock is held (the token may need the IdP's keys fetched).
Result<Caller> Coordinator::login_caller(const std::string& token) {
  MESH_ASSIGN(auto id, issuer_->verify(token, unix_now()));
  User u = user_after_login(Users{}, id, 0);
  Caller c{"user:" + (u.email.empty() ? u.subject : u.email), u.subject, false};
  c.admin = !opt_.oidc_admin_group.empty() &&
            std::find(u.groups.begin(), u.groups.end(), opt_.oidc_admin_group) != u.groups.end();
  std::shared_lock lk(mu_);
  if (auto it = users_.find(u.subject); it != users_.end() && it->second.disabled)
    return no_permission("user '" + c.actor.substr(5) + "' is disabled");
  return c;
}

Status Coordinator::apply_used_token(const std::string& hash, const Json& rec) {
  if (rec.is_null()) {
    used_tokens_.erase(hash);
    return Status::ok();
  }
  JsonView v(rec, "id-token record");
  MESH_ASSIGN(auto key_text, v.get_string("public_key"));
  MESH_ASSIGN(auto exp, v.get_int("expires_at"));
  MESH_ASSIGN(auto key, PublicKey::from_base64(key_text));
  used_tokens_[hash] = {key, exp};
  return Status::ok();
}

// Cuts off the login peers whose login expired; true when maps changed.
bool Coordinator::expire_due_logins(int64_t now) {
  WriteLock lk(*this);
  if (!lk) {
    log_.error(lk.status().message());
    return false;
  }
  std::vector<uint32_t> expired;
  Changes ch = expire_logins(model_, now, &expired);
  int64_t next = INT64_MAX;
  for (const Peer* p : model_.peers())
    if (!p->owner.empty() && !p->login_expired && p->login_expires_at > 0)
      next = std::min(next, p->login_expires_at);
  next_expiry_ = next;
  if (expired.empty()) return false;
  Json names = Json::array();
  for (uint32_t id : expired) names.push_back(model_.by_id(id)->name);
  Status s = persist_peers(expired, nullptr, ch,
                           Event{0, now, "system", "peer.login-expired", "",
                                 Json{{"peers", names}, {"maps_changed", ch.changed.size()}}});
  if (!s) log_.error(s.message());
  return ch.serial != 0;
}

void Coordinator::h_users_list(const httplib::Request& req, httplib::Response& res) {
  if (!auth_admin(req, res)) return;
  std::shared_lock lk(mu_);
  Json a = Json::array();
  for (const auto& [sub, u] : users_) {
    Json j = u.to_json();
    j["peers"] = user_peers(model_, sub).size();
    a.push_back(j);
  }
  send_json(res, 200, Json{{"users", a}});
}

void Coordinator::h_user_op(const httplib::Request& req, httplib::Response& res,
                            const std::string& op) {
  Caller who;
  if (!auth_admin(req, res, &who)) return;
  auto j = json_body(req, 4096);
  if (!j) return send_error(res, from_status(j.status()));
  if (!j->is_object() || !j->contains("user") || !(*j)["user"].is_string() || j->size() != 1)
    return send_error(res, {400, "request: user: expected {\"user\": SUBJECT or EMAIL}", "user"});
  std::string ref = (*j)["user"].get<std::string>();
  int64_t now = unix_now();
  WriteLock lk(*this);
  if (!lk) return send_error(res, from_status(lk.status()));
  User* found = find_user(users_, ref);
  if (!found) return send_error(res, {404, "request: user: no user '" + ref + "'", "user"});
  User u = *found;
  std::vector<uint32_t> ids = user_peers(model_, u.subject);
  auto peer_list = [&] {
    Json a = Json::array();
    for (uint32_t id : user_peers(model_, u.subject)) a.push_back(model_.by_id(id)->to_json());
    return a;
  };
  if (op == "show") {
    Json out = u.to_json();
    out["peers"] = peer_list();
    return send_json(res, 200, out);
  }
  std::string target = u.email.empty() ? u.subject : u.email;
  if (op == "delete") {
    for (uint32_t id : ids) {
      Status s = delete_peer_locked(*model_.by_id(id), who.actor, "user " + target + " deleted");
      if (!s) return send_error(res, from_status(s));
    }
    Status s = persist([&](Store& st) { return st.delete_record("user", u.subject); }, Changes{},
                       Event{0, now, who.actor, "user.delete", target,
                             Json{{"subject", u.subject}, {"peers_deleted", ids.size()}}});
    if (!s) return send_error(res, from_status(s));
    users_.erase(u.subject);
    lk.unlock();
    publish();
    return send_json(res, 200, Json{{"deleted", target}, {"peers_deleted", ids.size()}});
  }
  u.disabled = op == "disable";
  std::vector<uint32_t> touched;
  Changes ch = sync_user_peers(model_, u, now, &touched);
  users_[u.subject] = u;
  Status s = persist_peers(touched, &u, ch,
                           Event{0, now, who.actor, "user." + op, target,
                                 Json{{"peers", ids.size()}, {"maps_changed", ch.changed.size()}}});
  if (!s) return send_error(res, from_status(s));
  Json out = u.to_json();
  out["peers"] = peer_list();
  lk.unlock();
  publish();
  send_json(res, 200, out);
}

}  // namespace

Status serve(const ServeOptions& opt, std::ostream& out, Log& log, const std::atomic<bool>* stop) {
  auto sa = SockAddr::parse(opt.listen);
  if (!sa) return usage_error("--listen: " + sa.status().message());
  if (opt.tls_cert.empty() != opt.tls_key.empty())
    return usage_error("--tls-cert and --tls-key go together");
  if (!opt.turn.empty() && opt.relay_secret_file.empty())
    return usage_error("--turn needs --relay-secret-file (coturn REST credentials)");
  if (opt.credential_lifetime < 120) return usage_error("--credential-lifetime must be at least 120 s");
  if (opt.max_threads < 1) return usage_error("--max-connections must be at least 1");
  if (opt.request_timeout < 1 || opt.request_timeout > 3600)
    return usage_error("--request-timeout must be 1-3600 seconds");
  if (opt.max_watches_per_peer < 1) return usage_error("--max-watches-per-peer must be at least 1");
  if (opt.max_nonces < 1) return usage_error("--max-nonces must be at least 1");
  if (opt.announces_per_minute < 0) return usage_error("--announces-per-minute must be 0 (no limit) or more");
  if (opt.audit_max_age < 0 || opt.audit_max_events < 0)
    return usage_error("--audit-max-age and --audit-max-events must be 0 (no limit) or more");

  // State (database, keys, token) is private to the coordinator.
  ::umask(077);
  Coordinator coord(opt, log);
  MESH_TRY(coord.init());

  GuardOptions guard_opt;
  guard_opt.max_connections = opt.max_threads;
  guard_opt.max_per_source = opt.max_connections_per_source
                                 ? opt.max_connections_per_source
                                 : std::max<size_t>(1, opt.max_threads / 4);
  guard_opt.max_queue = opt.max_queue;
  guard_opt.request_timeout = opt.request_timeout;
  std::unique_ptr<httplib::Server> svr;
  ConnectionGuard* guard = nullptr;
  if (!opt.tls_cert.empty()) {
    for (const auto& f : {opt.tls_cert, opt.tls_key}) {
      auto r = read_file(f, 1 << 20);
      if (!r) return r.status();
    }
    auto tls = std::make_unique<GuardedTlsServer>(guard_opt, opt.tls_cert.c_str(),
                                                  opt.tls_key.c_str());
    if (!tls->is_valid()) return Status(Exit::Config, "cannot load --tls-cert/--tls-key");
    guard = &tls->guard();
    svr = std::move(tls);
  } else {
    auto g = std::make_unique<GuardedServer>(guard_opt);
    guard = &g->guard();
    svr = std::move(g);
  }
  // httplib listens with a backlog of 5; a burst of watchers reconnecting
  // (a coordinator restart) would see SYNs dropped and 1-3 s retransmits.
  // Capture the socket and widen the backlog after bind (Linux allows
  // listen() again on a listening socket).
  int listen_fd = -1;
  svr->set_socket_options([&listen_fd](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd = sock;  // the last socket created is the one that bound
  });
  svr->set_payload_max_length(opt.max_body);
  svr->set_keep_alive_max_count(100000);
  // An idle connection holds a thread: it may wait for its next request as
  // long as a request may take to arrive, no longer.
  svr->set_keep_alive_timeout(opt.request_timeout);
  svr->set_read_timeout(opt.request_timeout, 0);
  svr->set_write_timeout(10, 0);
  coord.routes(*svr);

  std::string host = sa->ip.to_string();
  int port = sa->port;
  if (port == 0) {
    port = svr->bind_to_any_port(host);
    if (port < 0) return unavailable("cannot listen on " + opt.listen);
  } else if (!svr->bind_to_port(host, port)) {
    return unavailable("cannot listen on " + opt.listen + " (address in use?)");
  }
  if (listen_fd >= 0) ::listen(listen_fd, 4096);
  std::string shown = sa->ip.is_v4() ? host : "[" + host + "]";

  // Signals are taken synchronously by one thread, which stops the server.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  std::atomic<bool> stopping{false};
  std::thread sig([&] {
    for (;;) {
      timespec ts{0, 200 * 1000 * 1000};
      int s = sigtimedwait(&set, nullptr, &ts);
      if (s == SIGINT || s == SIGTERM || stopping || (stop && *stop)) break;
    }
    stopping = true;
    coord.shutdown();
    svr->stop();
  });
  std::thread jan([&] { coord.janitor(stopping); });
  std::thread follower([&] {
    if (coord.replicated()) coord.follow(stopping);
  });

  std::thread announce([&] {
    for (int i = 0; i < 500 && !svr->is_running() && !stopping; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    coord.set_server(guard);
    out << "listening on " << (opt.tls_cert.empty() ? "http" : "https") << "://" << shown << ":"
        << port << "\n" << std::flush;
    log.info("state in " + opt.state_dir);
  });
  bool ok = svr->listen_after_bind();
  stopping = true;
  announce.join();
  sig.join();
  jan.join();
  follower.join();
  if (!ok) return unavailable("server stopped with an error");
  return Status::ok();
}

}  // namespace mesh::coord
