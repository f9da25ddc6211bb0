#include "punch/probe.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "stun/stun.h"

namespace mesh::punch {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

Result<SecretKey> derive_probe_key(const SecretKey& own_private, const PublicKey& peer) {
  MESH_ASSIGN(SecretKey shared, own_private.shared_secret(peer));
  if (sodium_init() < 0) return internal_error("libsodium initialisation failed");
  // Bind the key to the label and to the (ordered) pair of public keys, so a
  // key for one pair or one purpose is useless for any other.
  PublicKey self = own_private.public_key();
  const PublicKey& lo = std::min(self, peer);
  const PublicKey& hi = std::max(self, peer);
  static constexpr char kLabel[] = "mesh-punch probe v1";
  crypto_generichash_state st;
  crypto_generichash_init(&st, shared.bytes().data(), shared.bytes().size(), kKeyLen);
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(kLabel), sizeof kLabel - 1);
  crypto_generichash_update(&st, lo.bytes.data(), lo.bytes.size());
  crypto_generichash_update(&st, hi.bytes.data(), hi.bytes.size());
  std::array<uint8_t, kKeyLen> out{};
  crypto_generichash_final(&st, out.data(), out.size());
  SecretKey k(out);
  sodium_memzero(out.data(), out.size());
  sodium_memzero(&st, sizeof st);
  return k;
}

namespace {

// Direct paths first; then the relayed ones: a peer-reflexive address on
// loopback is our own relay client's local port (the peer reached us through
// our allocation), a "relay" candidate is the peer's allocation.
int kind_rank(const std::string& kind, const SockAddr& addr) {
  if (kind == "host") return 0;
  if (kind == "srflx") return 1;
  if (kind == "prflx") return addr.ip.is_loopback() ? 3 : 2;
  return 4;
}
constexpr int kFirstRelayedRank = 3;

struct Cand {
  SockAddr addr;
  std::string kind;
  bool ok = false;
  bool triggered = false;  // they reached us from here: no opening phase needed
  double rtt_ms = -1;
  int sends = 0;
  Clock::time_point next{};
  Clock::time_point open_until{};  // short-TTL opening requests until then

  int rank() const { return kind_rank(kind, addr); }
  bool relayed() const { return rank() >= kFirstRelayedRank; }
};

struct PeerState {
  const ProbePeer* peer = nullptr;
  SecretKey key;
  std::string user_out;  // "<their key>:<our key>" in our requests
  std::vector<Cand> cands;
  bool heard = false;       // one of our checks was answered
  bool they_heard = false;  // they sent USE-CANDIDATE
  bool told = false;        // we sent USE-CANDIDATE (so they can stop too)
  // When a check of theirs first came straight from them (not through a
  // relay): their NAT maps them towards us, so our checks cannot collide.
  std::optional<Clock::time_point> probing_since;

  const Cand* best() const {
    const Cand* b = nullptr;
    for (const auto& c : cands) {
      if (!c.ok) continue;
      if (!b || std::pair(c.rank(), c.rtt_ms) < std::pair(b->rank(), b->rtt_ms)) b = &c;
    }
    return b;
  }
};

struct Pending {
  stun::TxId id;
  size_t peer, cand;
  Clock::time_point sent;
};

stun::Bytes as_bytes(const SecretKey& k) { return {k.bytes().data(), k.bytes().size()}; }

std::array<uint8_t, 8> mesh_time(int64_t ms) {
  std::array<uint8_t, 8> b{};
  for (int i = 7; i >= 0; --i, ms >>= 8) b[i] = static_cast<uint8_t>(ms & 0xff);
  return b;
}

// An authenticated request is fresh when its MESH-TIME is within
// kProbeMaxSkew of our clock and its transaction id is new to this probe
// (probe.h). `seen` keeps the ids taken, the newest 4096.
bool fresh_check(const stun::MessageView& m, int64_t now_ms, std::vector<stun::TxId>& seen) {
  const auto* t = m.find(kMeshTimeAttr);
  if (!t || t->value.size() != 8) return false;
  int64_t sent = 0;
  for (uint8_t b : t->value) sent = sent << 8 | b;
  if (sent < now_ms - kProbeMaxSkew.count() || sent > now_ms + kProbeMaxSkew.count()) return false;
  if (std::find(seen.begin(), seen.end(), m.tx) != seen.end()) return false;
  if (seen.size() >= 4096) seen.erase(seen.begin(), seen.begin() + 1024);
  seen.push_back(m.tx);
  return true;
}

}  // namespace

Result<std::vector<PeerPath>> probe(Transport& t, const SecretKey& own_private,
                                    const ProbeOptions& opt, Log* log,
                                    std::vector<SockAddr>* seen_as) {
  const auto start = opt.now();
  const auto end = start + opt.timeout;
  const auto window_end = start + (opt.open_ttl > 0 ? opt.open_window : milliseconds(0));
  const std::string own_b64 = own_private.public_key().to_base64();

  std::vector<PeerState> peers(opt.peers.size());
  for (size_t i = 0; i < opt.peers.size(); ++i) {
    PeerState& ps = peers[i];
    ps.peer = &opt.peers[i];
    MESH_ASSIGN(ps.key, derive_probe_key(own_private, ps.peer->public_key));
    ps.user_out = ps.peer->public_key.to_base64() + ":" + own_b64;
    for (const auto& c : ps.peer->candidates) {
      bool dup = false;
      for (const auto& x : ps.cands) dup = dup || x.addr == c.endpoint;
      if (!dup) ps.cands.push_back(Cand{c.endpoint, c.kind, false, false, -1, 0, start, window_end});
    }
  }
  // Candidates that arrive while probing (opt.refresh) get their own opening
  // window, for the same reason as the first ones.
  auto add_candidates = [&](const std::vector<ProbePeer>& update, Clock::time_point now) {
    for (const auto& u : update) {
      for (auto& ps : peers) {
        if (ps.peer->public_key != u.public_key) continue;
        for (const auto& c : u.candidates) {
          bool dup = false;
          for (const auto& x : ps.cands) dup = dup || x.addr == c.endpoint;
          if (dup || ps.cands.size() >= 64) continue;
          auto open_until = now + (opt.open_ttl > 0 ? opt.open_window : milliseconds(0));
          ps.cands.push_back(Cand{c.endpoint, c.kind, false, false, -1, 0, now, open_until});
          if (log) log->debug("new candidate " + c.endpoint.to_string() + " for " + ps.peer->name);
        }
      }
    }
  };
  auto next_refresh = start + opt.interval;
  // Debug lines carry the time since the start: the two sides' probes are
  // read side by side.
  auto debug = [&](const std::string& m) {
    if (!log || log->level() < LogLevel::Debug) return;
    auto ms = std::chrono::duration_cast<milliseconds>(opt.now() - start).count();
    log->debug("+" + std::to_string(ms) + " ms: " + m);
  };

  if (log && log->level() >= LogLevel::Debug) {
    auto wall = std::chrono::duration_cast<milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
    debug("probing " + std::to_string(peers.size()) + " peers, wall clock " +
          std::to_string(wall / 1000) + "." + std::to_string(1000 + wall % 1000).substr(1));
  }

  std::vector<Pending> pending;
  std::vector<stun::TxId> taken;  // transaction ids of the requests we took
  uint8_t buf[1500], out[1500];
  auto maybe_same_lan = [&](const PeerState& ps) {
    if (!opt.local_subnets) return true;
    for (const auto& c : ps.cands) {
      if (c.kind != "host") continue;
      for (const auto& net : *opt.local_subnets)
        if (net.contains(c.addr.ip)) return true;
    }
    return false;
  };
  auto all_done = [&](Clock::time_point now) {
    for (const auto& ps : peers) {
      const Cand* b = ps.best();
      if (!b || !ps.they_heard || !ps.told) return false;
      // A same-LAN host path answers within `settle` of the start if it
      // exists; srflx paths only work after the opening window anyway.
      if (b->kind != "host" && now - start < opt.settle && maybe_same_lan(ps)) return false;
      // Relayed paths answer at once, direct ones only after the opening
      // window and only while the peer probes too: give them time.
      auto wend = window_end;
      if (ps.probing_since) wend = std::min(wend, *ps.probing_since + opt.interval);
      if (b->relayed() && now - wend < opt.relayed_settle) return false;
    }
    return true;
  };

  std::optional<Clock::time_point> linger_until;  // set: answering (and triggered checks) only
  for (int guard = 0; guard < 1000000; ++guard) {
    auto now = opt.now();
    if (now >= end) break;
    if (!linger_until && all_done(now)) {
      if (opt.linger.count() <= 0) break;
      linger_until = std::min(end, now + opt.linger);
      debug("settled; answering checks until +" +
            std::to_string(std::chrono::duration_cast<milliseconds>(*linger_until - start).count()) +
            " ms");
    }
    if (linger_until && now >= *linger_until) break;
    if (opt.refresh && now >= next_refresh) {
      add_candidates(opt.refresh(), now);
      next_refresh = now + opt.interval;
    }
    auto next_wake = opt.refresh ? std::min(end, next_refresh) : end;
    if (linger_until) next_wake = std::min(next_wake, *linger_until);
    for (size_t pi = 0; pi < peers.size(); ++pi) {
      PeerState& ps = peers[pi];
      for (size_t ci = 0; ci < ps.cands.size(); ++ci) {
        Cand& c = ps.cands[ci];
        // Lingering, only a check back to where a peer's check came from
        // that no answer confirmed yet: a peer whose opening window was
        // longer reaches us only now, and the path is then ours too.
        if (linger_until && !(c.triggered && !c.ok)) continue;
        auto open_end = c.open_until;
        if (ps.probing_since) open_end = std::min(open_end, *ps.probing_since + opt.interval);
        bool opening = c.kind != "host" && !c.triggered && now < open_end;
        // Without a NAT of our own, the opening window is silent (see behind_nat).
        if (opening && !opt.behind_nat) c.next = std::max(c.next, open_end);
        if (now >= c.next) {
          stun::TxId id = stun::random_txid();
          stun::Builder b(out, stun::kBinding, stun::kRequest, id);
          b.add_string(stun::kUsername, ps.user_out);
          auto sent_at = mesh_time(opt.wall_ms());
          b.add(kMeshTimeAttr, sent_at);
          if (ps.heard) b.add(stun::kUseCandidate, {});
          b.add_integrity_sha256(as_bytes(ps.key)).add_fingerprint();
          Status s = t.send(c.addr, b.finish(), opening ? opt.open_ttl : 0);
          if (!s && s.code() != Exit::Unavailable) return s;
          if (s && ps.heard && !opening) ps.told = true;
          if (s) {
            if (pending.size() >= 4096) pending.erase(pending.begin(), pending.begin() + 1024);
            pending.push_back({id, pi, ci, now});
          }
          ++c.sends;
          // Checks every `interval` for the first 40 tries, then 4x slower;
          // a working path is refreshed slowly (it carries USE-CANDIDATE).
          auto iv = opt.interval * (c.ok ? 4 : c.sends > 40 ? 4 : 1);
          c.next = now + iv;
          if (opening && c.next > open_end) c.next = open_end;
        }
        next_wake = std::min(next_wake, c.next);
      }
    }
    int wait = static_cast<int>(std::chrono::ceil<milliseconds>(
                                    std::max(next_wake - opt.now(), Clock::duration(0)))
                                    .count());
    MESH_ASSIGN(auto got, t.recv(wait, buf));
    if (!got) continue;
    auto m = stun::parse({buf, got->len});
    if (!m || m->method != stun::kBinding) continue;
    now = opt.now();
    if (m->cls == stun::kRequest) {
      const auto* u = m->find(stun::kUsername);
      if (!u) continue;
      std::string_view user = stun::as_string(*u);
      auto colon = user.find(':');
      if (colon == std::string_view::npos || user.substr(0, colon) != own_b64) continue;
      std::string_view from_key = user.substr(colon + 1);
      auto it = std::find_if(peers.begin(), peers.end(), [&](const PeerState& ps) {
        return ps.peer->public_key.to_base64() == from_key;
      });
      if (it == peers.end() || !stun::check_integrity_sha256(*m, as_bytes(it->key))) {
        debug("ignoring an unauthenticated probe from " + got->from.to_string());
        continue;
      }
      if (!fresh_check(*m, opt.wall_ms(), taken)) {
        debug("ignoring a stale or replayed probe from " + got->from.to_string());
        continue;
      }
      PeerState& ps = *it;
      stun::Builder b(out, stun::kBinding, stun::kSuccess, m->tx);
      b.add_xor_address(stun::kXorMappedAddress, got->from)
          .add_integrity_sha256(as_bytes(ps.key))
          .add_fingerprint();
      Status s = t.send(got->from, b.finish());
      if (!s && s.code() != Exit::Unavailable) return s;
      if (m->find(stun::kUseCandidate)) ps.they_heard = true;
      // A check straight from the peer left through its NAT, which now maps
      // it towards us: our full-TTL checks (from one interval on, a margin)
      // can no longer collide there. (One through a relay says nothing of
      // that: its probe may not know our candidates yet.)
      bool relayed = got->from.ip.is_loopback() ||
                     std::any_of(ps.cands.begin(), ps.cands.end(), [&](const Cand& x) {
                       return x.kind == "relay" && x.addr == got->from;
                     });
      if (!ps.probing_since && !relayed) {
        ps.probing_since = now;
        for (auto& x : ps.cands) x.next = std::min(x.next, now + opt.interval);
        debug("heard " + ps.peer->name + ": opening window over");
      }
      // Triggered check (RFC 8445 section 7.3.1.4) towards where they came from.
      auto c = std::find_if(ps.cands.begin(), ps.cands.end(),
                            [&](const Cand& x) { return x.addr == got->from; });
      if (c == ps.cands.end()) {
        if (ps.cands.size() < 64) {
          ps.cands.push_back(Cand{got->from, "prflx", false, true, -1, 0, now});
          debug("peer-reflexive candidate " + got->from.to_string() + " for " + ps.peer->name);
        }
      } else if (!c->ok && !c->triggered) {
        c->triggered = true;
        c->next = now;
      }
    } else if (m->cls == stun::kSuccess) {
      auto pit = std::find_if(pending.begin(), pending.end(),
                              [&](const Pending& p) { return p.id == m->tx; });
      if (pit == pending.end()) continue;
      PeerState& ps = peers[pit->peer];
      if (!stun::check_integrity_sha256(*m, as_bytes(ps.key))) continue;
      Cand& c = ps.cands[pit->cand];
      double rtt = std::chrono::duration<double, std::milli>(now - pit->sent).count();
      pending.erase(pit);
      if (got->from != c.addr) continue;  // answered from elsewhere: not this path
      if (seen_as)
        if (const auto* xa = m->find(stun::kXorMappedAddress))
          if (auto a = stun::decode_xor_address(*xa, m->tx);
              a && std::find(seen_as->begin(), seen_as->end(), *a) == seen_as->end())
            seen_as->push_back(*a);
      if (c.rtt_ms < 0 || rtt < c.rtt_ms) c.rtt_ms = rtt;
      if (!c.ok) {
        c.ok = true;
        debug("path to " + ps.peer->name + " via " + c.kind + " " + c.addr.to_string() +
              " works (" + std::to_string(rtt) + " ms)");
        if (!ps.heard) {
          ps.heard = true;
          c.next = now;  // tell them at once (USE-CANDIDATE)
        }
      }
    }
  }

  std::vector<PeerPath> result;
  for (const auto& ps : peers) {
    if (log && log->level() >= LogLevel::Debug) {
      std::string m = "checks to " + ps.peer->name + ":";
      for (const auto& c : ps.cands)
        m += " " + c.kind + " " + c.addr.to_string() + " sent " + std::to_string(c.sends) +
             (c.ok ? " ok" : " -") + (c.triggered ? " triggered" : "") + ";";
      debug(m);
    }
    PeerPath p;
    p.public_key = ps.peer->public_key;
    p.name = ps.peer->name;
    if (const Cand* b = ps.best()) {
      p.status = "direct";
      p.endpoint = b->addr;
      p.kind = b->kind;
      p.rtt_ms = std::round(b->rtt_ms * 1000.0) / 1000.0;
    } else {
      p.status = "relay-needed";
    }
    result.push_back(std::move(p));
  }
  return result;
}

void add_moved_mappings(EndpointsDoc* doc, const std::vector<SockAddr>& seen_as) {
  for (const auto& a : seen_as) {
    bool on_our_nat = false, known = false;
    for (const auto& c : doc->candidates) {
      on_our_nat = on_our_nat || (c.kind == "srflx" && c.endpoint.ip == a.ip);
      known = known || c.endpoint == a;
    }
    if (on_our_nat && !known) doc->candidates.push_back({a, "prflx"});
  }
}

}  // namespace mesh::punch
