#include "netmap/fast.h"

#include <array>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

namespace mesh {
namespace {

// Printable ASCII other than '"' and '\\': taken as is inside a string.
constexpr std::array<bool, 256> kPlain = [] {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x80; ++c) t[c] = c != '"' && c != '\\';
  return t;
}();

// Every function here returns false to decline: the text is then handed
// to parse_json() + parse_netmap(), which either accept it (something this
// reader leaves to them, such as an escaped string) or say what is wrong.
class Reader {
 public:
  explicit Reader(std::string_view t) : p_(t.data()), end_(t.data() + t.size()) {}

  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool eat(char c) {
    ws();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  bool at(char c) {
    ws();
    return p_ < end_ && *p_ == c;
  }
  bool at_end() {
    ws();
    return p_ == end_;
  }

  // A string without escapes, of printable ASCII and well-formed UTF-8
  // (Unicode 15, table 3-7: the sequences nlohmann's lexer accepts).
  bool string(std::string_view* out) {
    if (!eat('"')) return false;
    const char* start = p_;
    while (p_ < end_) {
      while (p_ < end_ && kPlain[static_cast<unsigned char>(*p_)]) ++p_;
      if (p_ == end_) break;
      auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        *out = std::string_view(start, static_cast<size_t>(p_ - start));
        ++p_;
        return true;
      }
      if (c == '\\' || c < 0x20) return false;
      if (c < 0x80) {
        ++p_;
        continue;
      }
      if (!utf8()) return false;
    }
    return false;
  }

  // An integer of at most 18 digits (no fraction, no exponent): exactly
  // representable whether nlohmann stores it signed or unsigned.
  bool integer(int64_t* out) {
    ws();
    bool neg = false;
    if (p_ < end_ && *p_ == '-') {
      neg = true;
      ++p_;
    }
    if (p_ == end_ || *p_ < '0' || *p_ > '9') return false;
    int64_t v = 0;
    int digits = 0;
    if (*p_ == '0') {
      ++p_;
      digits = 1;
    } else {
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
        if (++digits > 18) return false;
        v = v * 10 + (*p_++ - '0');
      }
    }
    if (p_ < end_ && ((*p_ >= '0' && *p_ <= '9') || *p_ == '.' || *p_ == 'e' || *p_ == 'E'))
      return false;
    *out = neg ? -v : v;
    return true;
  }

  bool integer_in(int64_t lo, int64_t hi, int64_t* out) {
    return integer(out) && *out >= lo && *out <= hi;
  }

  // {"key": value, ...}: `member(key)` reads the value (or declines).
  template <typename F>
  bool object(F&& member) {
    if (!eat('{')) return false;
    if (eat('}')) return true;
    for (;;) {
      std::string_view key;
      if (!string(&key) || !eat(':') || !member(key)) return false;
      if (eat(',')) continue;
      return eat('}');
    }
  }

  template <typename F>
  bool array(F&& element) {
    if (!eat('[')) return false;
    if (eat(']')) return true;
    for (;;) {
      if (!element()) return false;
      if (eat(',')) continue;
      return eat(']');
    }
  }

  // Any value, checked as strictly as nlohmann does, for members the map
  // does not use (non-strict mode ignores them).
  bool skip(int depth = 0) {
    if (depth > 64) return false;
    ws();
    if (p_ == end_) return false;
    switch (*p_) {
      case '{':
        return object([&](std::string_view) { return skip(depth + 1); });
      case '[':
        return array([&] { return skip(depth + 1); });
      case '"': {
        std::string_view s;
        return string(&s);
      }
      case 't':
        return word("true");
      case 'f':
        return word("false");
      case 'n':
        return word("null");
      default: {
        int64_t v;
        return integer(&v);
      }
    }
  }

 private:
  bool word(std::string_view w) {
    if (static_cast<size_t>(end_ - p_) < w.size() || std::memcmp(p_, w.data(), w.size()) != 0)
      return false;
    p_ += w.size();
    return true;
  }

  bool utf8() {
    auto b = [&](size_t i) { return static_cast<unsigned char>(p_[i]); };
    auto cont = [&](size_t i, unsigned lo = 0x80, unsigned hi = 0xBF) {
      return p_ + i < end_ && b(i) >= lo && b(i) <= hi;
    };
    unsigned c = b(0);
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) {
      if (!cont(1)) return false;
      n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
      if (!cont(1, lo, hi) || !cont(2)) return false;
      n = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
      if (!cont(1, lo, hi) || !cont(2) || !cont(3)) return false;
      n = 4;
    } else {
      return false;
    }
    p_ += n;
    return true;
  }

  const char* p_;
  const char* end_;
};

// Members seen in one object: a repeated one declines (nlohmann keeps the
// last, this reader would not know which).
struct Seen {
  uint32_t bits = 0;
  bool first(int i) {
    if (bits & (1u << i)) return false;
    bits |= 1u << i;
    return true;
  }
};

int index_of(std::string_view key, std::initializer_list<std::string_view> names) {
  int i = 0;
  for (auto n : names) {
    if (n == key) return i;
    ++i;
  }
  return -1;
}

bool string_value(Reader& r, std::string* out) {
  std::string_view s;
  if (!r.string(&s)) return false;
  out->assign(s);
  return true;
}

bool string_list(Reader& r, std::vector<std::string>* out) {
  return r.array([&] {
    std::string_view s;
    if (!r.string(&s)) return false;
    out->emplace_back(s);
    return true;
  });
}

// Shortcuts for the common spellings, each accepting a subset of what the
// general parser accepts and giving the same value; anything else goes to
// the general parser (Prefix/SockAddr::parse, PublicKey::from_base64).

// Up to `max_digits` decimal digits (at least one) at the front of `s`.
bool digits(std::string_view* s, int max_digits, unsigned* out) {
  unsigned v = 0;
  int n = 0;
  while (n < static_cast<int>(s->size()) && (*s)[n] >= '0' && (*s)[n] <= '9') {
    if (++n > max_digits) return false;
    v = v * 10 + static_cast<unsigned>((*s)[n - 1] - '0');
  }
  if (n == 0) return false;
  s->remove_prefix(static_cast<size_t>(n));
  *out = v;
  return true;
}

// Dotted-quad IPv4 as inet_pton(3) takes it: four octets 0-255 without
// leading zeros. Consumes it from the front of `s`.
bool quick_v4(std::string_view* s, IpAddr* a) {
  a->family = AF_INET;
  for (int i = 0; i < 4; ++i) {
    if (i) {
      if (s->empty() || s->front() != '.') return false;
      s->remove_prefix(1);
    }
    bool leading_zero = !s->empty() && s->front() == '0';
    unsigned v;
    std::string_view before = *s;
    if (!digits(s, 3, &v) || v > 255 || (leading_zero && before.size() - s->size() > 1)) return false;
    a->bytes[static_cast<size_t>(i)] = static_cast<uint8_t>(v);
  }
  return true;
}

bool quick_prefix(std::string_view s, Prefix* p) {
  unsigned len;
  if (!quick_v4(&s, &p->addr) || s.empty() || s.front() != '/') return false;
  s.remove_prefix(1);
  if (!digits(&s, 2, &len) || !s.empty() || len > 32) return false;
  p->len = static_cast<int>(len);
  return true;
}

bool quick_endpoint(std::string_view s, SockAddr* e) {
  unsigned port;
  if (!quick_v4(&s, &e->ip) || s.empty() || s.front() != ':') return false;
  s.remove_prefix(1);
  if (!digits(&s, 5, &port) || !s.empty() || port > 65535) return false;
  e->port = static_cast<uint16_t>(port);
  return true;
}

// 44 characters of standard base64, the last '=' and the two spare bits
// zero: what decode_key() accepts without trimming.
bool quick_key(std::string_view s, PublicKey* k) {
  static constexpr auto kRev = [] {
    std::array<int8_t, 256> t{};
    for (auto& v : t) v = -1;
    constexpr char kStd[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kStd[i])] = static_cast<int8_t>(i);
    return t;
  }();
  if (s.size() != 44 || s[43] != '=') return false;
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < 43; ++i) {
    int v = kRev[static_cast<unsigned char>(s[i])];
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      k->bytes[o++] = static_cast<uint8_t>(acc >> bits);
    }
  }
  return o == kKeyLen && (acc & ((1u << bits) - 1)) == 0;
}

bool prefixes(Reader& r, std::vector<Prefix>* out) {
  return r.array([&] {
    std::string_view s;
    if (!r.string(&s)) return false;
    Prefix quick;
    if (quick_prefix(s, &quick)) {
      out->push_back(quick);
      return true;
    }
    auto p = Prefix::parse(s);
    if (!p) return false;
    out->push_back(*p);
    return true;
  });
}

bool public_key(Reader& r, PublicKey* out) {
  std::string_view s;
  if (!r.string(&s)) return false;
  if (quick_key(s, out)) return true;
  auto k = PublicKey::from_base64(s);
  if (!k) return false;
  *out = *k;
  return true;
}

// An unknown member: an error in strict mode, ignored otherwise.
bool other(Reader& r, bool strict) { return !strict && r.skip(); }

// Members this reader leaves to parse_netmap(): the route fields (self.routes,
// peers[].routes, firewall.forward), which only routing peers and their
// clients' maps carry. Declining keeps the contract without a second copy of
// their validation.
bool route_member(std::string_view key) { return key == "routes" || key == "forward"; }

bool candidate(Reader& r, bool strict, Candidate* c) {
  Seen seen;
  bool have_endpoint = false;
  bool ok = r.object([&](std::string_view key) {
    int i = index_of(key, {"endpoint", "kind"});
    if (i < 0) return other(r, strict);
    if (!seen.first(i)) return false;
    std::string_view s;
    if (!r.string(&s)) return false;
    if (i == 0) {
      SockAddr quick;
      if (quick_endpoint(s, &quick)) {
        if (quick.port == 0) return false;
        c->endpoint = quick;
        have_endpoint = true;
        return true;
      }
      auto sa = SockAddr::parse(s);
      if (!sa || sa->port == 0) return false;
      c->endpoint = *sa;
      have_endpoint = true;
      return true;
    }
    if (s != "host" && s != "srflx" && s != "prflx" && s != "relay") return false;
    c->kind = s;
    return true;
  });
  return ok && have_endpoint;
}

bool peer(Reader& r, bool strict, MapPeer* p) {
  Seen seen;
  bool ok = r.object([&](std::string_view key) {
    int i = index_of(key, {"name", "public_key", "addresses", "allowed_ips", "endpoints",
                           "keepalive", "preshared_key", "groups"});
    if (i < 0) return !route_member(key) && other(r, strict);
    if (!seen.first(i)) return false;
    switch (i) {
      case 0:
        return string_value(r, &p->name);
      case 1:
        return public_key(r, &p->public_key);
      case 2:
        return prefixes(r, &p->addresses) && !p->addresses.empty();
      case 3:
        return prefixes(r, &p->allowed_ips);
      case 4:
        return r.array([&] {
          Candidate c;
          if (!candidate(r, strict, &c)) return false;
          p->endpoints.push_back(std::move(c));
          return true;
        });
      case 5: {
        int64_t v;
        if (!r.integer_in(0, 65535, &v)) return false;
        p->keepalive = static_cast<int>(v);
        return true;
      }
      case 6: {
        std::string_view s;
        if (!r.string(&s)) return false;
        auto psk = SecretKey::from_base64(s);
        if (!psk) return false;
        p->preshared_key = *psk;
        return true;
      }
      default:
        return string_list(r, &p->groups);
    }
  });
  // public_key and addresses are required.
  if (!ok || (seen.bits & 0b110) != 0b110) return false;
  // As parse_peer(): the peer's own addresses are always routed to it.
  for (const auto& a : p->addresses) {
    Prefix host{a.addr, a.addr.is_v4() ? 32 : 128};
    bool have = false;
    for (const auto& x : p->allowed_ips) have = have || x.canonical() == host;
    if (!have) p->allowed_ips.push_back(host);
  }
  for (auto& a : p->allowed_ips) a = a.canonical();
  return true;
}

bool rule(Reader& r, bool strict, FirewallRule* f) {
  Seen seen;
  bool ok = r.object([&](std::string_view key) {
    int i = index_of(key, {"sources", "proto", "ports", "rule"});
    if (i < 0) return other(r, strict);
    if (!seen.first(i)) return false;
    switch (i) {
      case 0:
        return prefixes(r, &f->sources) && !f->sources.empty();
      case 1:
        if (!string_value(r, &f->proto)) return false;
        return f->proto == "tcp" || f->proto == "udp" || f->proto == "icmp" || f->proto == "any";
      case 2:
        return r.array([&] {
          if (r.at('"')) {
            std::string_view s;
            if (!r.string(&s)) return false;
            auto pr = PortRange::parse(s);
            if (!pr) return false;
            f->ports.push_back(*pr);
            return true;
          }
          int64_t n;
          if (!r.integer_in(1, 65535, &n)) return false;
          PortRange pr;
          pr.lo = pr.hi = static_cast<uint16_t>(n);
          f->ports.push_back(pr);
          return true;
        });
      default:
        return string_value(r, &f->rule);
    }
  });
  if (!ok || !(seen.bits & 1)) return false;
  return f->ports.empty() || f->proto == "tcp" || f->proto == "udp";
}

bool turn_server(Reader& r, bool strict, TurnServer* t) {
  Seen seen;
  t->transport = "udp";
  bool ok = r.object([&](std::string_view key) {
    int i = index_of(key, {"server", "transport", "username", "password", "expires_at"});
    if (i < 0) return other(r, strict);
    if (!seen.first(i)) return false;
    switch (i) {
      case 0:
        return string_value(r, &t->server);
      case 1:
        if (!string_value(r, &t->transport)) return false;
        return t->transport == "udp" || t->transport == "tcp" || t->transport == "tls";
      case 2:
        return string_value(r, &t->username);
      case 3:
        return string_value(r, &t->password);
      default:
        return r.integer(&t->expires_at);
    }
  });
  return ok && (seen.bits & 0b1101) == 0b1101;  // server, username, password
}

bool self(Reader& r, bool strict, NetMap::Self* s) {
  Seen seen;
  bool ok = r.object([&](std::string_view key) {
    int i = index_of(key, {"name", "public_key", "addresses", "groups", "listen_port", "mtu"});
    if (i < 0) return !route_member(key) && other(r, strict);
    if (!seen.first(i)) return false;
    int64_t v;
    switch (i) {
      case 0:
        return string_value(r, &s->name);
      case 1:
        return public_key(r, &s->public_key);
      case 2:
        return prefixes(r, &s->addresses) && !s->addresses.empty();
      case 3:
        return string_list(r, &s->groups);
      case 4:
        if (!r.integer_in(0, 65535, &v)) return false;
        s->listen_port = static_cast<uint16_t>(v);
        return true;
      default:
        if (!r.integer_in(1280, 65535, &v)) return false;
        s->mtu = static_cast<int>(v);
        return true;
    }
  });
  return ok && (seen.bits & 0b110) == 0b110;  // public_key, addresses
}

struct KeyHash {
  size_t operator()(const PublicKey& k) const {
    size_t h;
    std::memcpy(&h, k.bytes.data(), sizeof h);
    return h;
  }
};

struct PrefixHash {
  size_t operator()(const Prefix& p) const {
    size_t h = 1469598103934665603ull;
    auto mix = [&](uint8_t b) { h = (h ^ b) * 1099511628211ull; };
    mix(static_cast<uint8_t>(p.addr.family));
    mix(static_cast<uint8_t>(p.len));
    for (uint8_t b : p.addr.bytes) mix(b);
    return h;
  }
};

// The checks parse_netmap() makes across peers.
bool peers_consistent(const NetMap& m) {
  std::unordered_set<PublicKey, KeyHash> seen;
  std::unordered_set<Prefix, PrefixHash> owned;
  seen.reserve(m.peers.size());
  owned.reserve(m.peers.size() * 2);
  for (const auto& p : m.peers) {
    if (p.public_key == m.self.public_key || !seen.insert(p.public_key).second) return false;
    for (const auto& a : p.allowed_ips)
      if (!owned.insert(a).second) return false;
  }
  return true;
}

}  // namespace

std::optional<NetMap> parse_netmap_fast(std::string_view text, ParseOptions opt, const PeerHook& on_peer) {
  Reader r(text);
  NetMap m;
  Seen seen;
  bool strict = opt.strict;
  bool ok = r.object([&](std::string_view key) {
    int i = index_of(key, {"version", "serial", "generated_at", "self", "peers", "firewall", "stun",
                           "turn", "dns"});
    if (i < 0) return other(r, strict);
    if (!seen.first(i)) return false;
    int64_t v;
    switch (i) {
      case 0:
        return r.integer(&v) && v == 1;
      case 1:
        if (!r.integer(&v) || v < 0) return false;
        m.serial = static_cast<uint64_t>(v);
        return true;
      case 2:
        return r.integer(&m.generated_at);
      case 3:
        return self(r, strict, &m.self);
      case 4:
        // Room for as many peers as the text could hold (each takes well
        // over 64 bytes of it): growing the vector instead moved every peer
        // read so far, into fresh pages, a dozen times at 5,000 peers.
        // Capacity never used is address space, not memory.
        m.peers.reserve(text.size() / 64);
        return r.array([&] {
          MapPeer p;
          if (!peer(r, strict, &p)) return false;
          m.peers.push_back(std::move(p));
          if (on_peer) on_peer(m.peers.back());
          return true;
        });
      case 5: {
        Seen fs;
        return r.object([&](std::string_view k) {
          if (k != "inbound") return !route_member(k) && other(r, strict);
          if (!fs.first(0)) return false;
          return r.array([&] {
            FirewallRule f;
            if (!rule(r, strict, &f)) return false;
            m.inbound.push_back(std::move(f));
            return true;
          });
        });
      }
      case 6:
        return string_list(r, &m.stun);
      case 8: {
        Seen ds;  // domain is required in dns
        bool read = r.object([&](std::string_view k) {
          if (k != "domain") return other(r, strict);
          return ds.first(0) && string_value(r, &m.dns_domain) && valid_dns_domain(m.dns_domain);
        });
        return read && ds.bits == 1;
      }
      default:
        return r.array([&] {
          TurnServer t;
          if (!turn_server(r, strict, &t)) return false;
          m.turn.push_back(std::move(t));
          return true;
        });
    }
  });
  // version, serial and self are required; nothing may follow the map.
  if (!ok || (seen.bits & 0b1011) != 0b1011 || !r.at_end() || !peers_consistent(m))
    return std::nullopt;
  return m;
}

Result<NetMap> parse_netmap_text(std::string_view text, const std::string& source, ParseOptions opt,
                                 const PeerHook& on_peer) {
  // The hook sees the fast path's peers only: a caller learns from the
  // result whether they were the map's.
  if (auto m = parse_netmap_fast(text, opt, on_peer)) return std::move(*m);
  MESH_ASSIGN(Json j, parse_json(text, source));
  return parse_netmap(j, source, opt);
}

std::optional<uint16_t> guess_listen_port(std::string_view text) {
  static constexpr std::string_view kName = "\"listen_port\"";
  size_t at = text.rfind(kName);
  if (at == std::string_view::npos) return std::nullopt;
  size_t i = at + kName.size();
  auto space = [&] {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) ++i;
  };
  space();
  if (i >= text.size() || text[i] != ':') return std::nullopt;
  ++i;
  space();
  uint32_t v = 0;
  size_t digits = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9' && digits < 6; ++i, ++digits)
    v = v * 10 + static_cast<uint32_t>(text[i] - '0');
  if (digits == 0 || digits > 5 || v > 65535) return std::nullopt;
  space();
  if (i >= text.size() || (text[i] != ',' && text[i] != '}')) return std::nullopt;
  return static_cast<uint16_t>(v);
}

}  // namespace mesh
