// Unit tests for lib/netmap/fast.h: the text fast path either declines or
// gives exactly what parse_json() + parse_netmap() give (differential).
#include "netmap/fast.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace mesh {
namespace {

struct Keys {
  std::string self = SecretKey::generate_private().public_key().to_base64();
  std::string a = SecretKey::generate_private().public_key().to_base64();
  std::string b = SecretKey::generate_private().public_key().to_base64();
  std::string psk = SecretKey::generate_preshared().to_base64();
};

std::string sample(const Keys& k) {
  return R"({
    "version": 1, "serial": 7, "generated_at": 1700000000,
    "self": {"name": "me", "public_key": ")" + k.self + R"(", "groups": ["ops"],
             "addresses": ["100.64.0.1/10", "fd7a:115c:a1e0::1/48"], "listen_port": 41641, "mtu": 1380},
    "peers": [
      {"name": "a", "public_key": ")" + k.a + R"(", "addresses": ["100.64.0.2/32"],
       "allowed_ips": ["198.18.5.9/24"], "groups": ["x", "y"], "preshared_key": ")" + k.psk + R"(",
       "endpoints": [{"endpoint": "203.0.113.5:40000", "kind": "srflx"}, {"endpoint": "[2001:db8::1]:5"}],
       "keepalive": 25},
      {"name": "b", "public_key": ")" + k.b + R"(", "addresses": ["100.64.0.3/32", "fd7a:115c:a1e0::3/128"]}
    ],
    "firewall": {"inbound": [
      {"sources": ["100.64.0.2/32"], "proto": "tcp", "ports": [22, "8000-8080"], "rule": "ssh"},
      {"sources": ["100.64.0.3/32"], "proto": "icmp"}]},
    "stun": ["203.0.113.1:3478"],
    "turn": [{"server": "203.0.113.1:3478", "username": "1999999999:me", "password": "x",
              "transport": "tls", "expires_at": 1999999999}],
    "dns": {"domain": "corp.mesh"}
  })";
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

// The contract: declined, or the very map (and no error) the slow path gives.
// Returns whether the fast path took it.
bool agrees(const std::string& text, bool strict) {
  auto fast = parse_netmap_fast(text, {.strict = strict});
  auto j = parse_json(text, "m.json");
  Result<NetMap> slow = j ? parse_netmap(*j, "m.json", {.strict = strict}) : Result<NetMap>(j.status());
  auto via = parse_netmap_text(text, "m.json", {.strict = strict});
  EXPECT_EQ(via.is_ok(), slow.is_ok()) << text;
  if (!slow) {
    EXPECT_FALSE(fast.has_value()) << text;
    if (!via) {
      EXPECT_EQ(via.status().message(), slow.status().message());
    }
    return false;
  }
  if (via) {
    EXPECT_EQ(netmap_to_json(*via), netmap_to_json(*slow));
  }
  if (!fast) return false;
  EXPECT_EQ(netmap_to_json(*fast), netmap_to_json(*slow)) << text;
  return true;
}

TEST(NetMapFast, TakesOrdinaryMapsAndAgrees) {
  Keys k;
  for (bool strict : {false, true}) {
    EXPECT_TRUE(agrees(sample(k), strict));
    // Compact, as mesh-coord writes it.
    EXPECT_TRUE(agrees(nlohmann::json::parse(sample(k)).dump(), strict));
  }
  // Non-ASCII names (well-formed UTF-8) stay on the fast path.
  EXPECT_TRUE(agrees(replace(sample(k), "\"name\": \"a\"", "\"name\": \"Jos\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""), true));
  // DEL is printable to JSON: whichever path takes it, they agree.
  agrees(replace(sample(k), "\"name\": \"a\"", "\"name\": \"a\x7f\""), true);
  // Unknown members are skipped when not strict.
  auto extra = replace(sample(k), "\"serial\": 7,",
                       "\"serial\": 7, \"x\": {\"a\": [1, -2, true, false, null, \"s\", {}]},");
  EXPECT_TRUE(agrees(extra, false));
  EXPECT_FALSE(agrees(extra, true));
}

TEST(NetMapFast, DnsDomainAgrees) {
  Keys k;
  const std::string s = sample(k);
  for (bool strict : {false, true}) {
    auto m = parse_netmap_fast(s, {.strict = strict});
    ASSERT_TRUE(m);
    EXPECT_EQ(m->dns_domain, "corp.mesh");
    // Without the object: no domain, on the fast path too.
    EXPECT_TRUE(agrees(replace(s, ",\n    \"dns\": {\"domain\": \"corp.mesh\"}", ""), strict));
  }
  // Invalid, or incomplete: the validator decides and reports.
  for (const char* bad : {"\"dns\": {\"domain\": \"a..b\"}", "\"dns\": {\"domain\": \"\"}", "\"dns\": {}",
                          "\"dns\": {\"domain\": \"x\", \"domain\": \"y\"}", "\"dns\": {\"domain\": 1}",
                          "\"dns\": []"})
    for (bool strict : {false, true})
      EXPECT_FALSE(agrees(replace(s, "\"dns\": {\"domain\": \"corp.mesh\"}", bad), strict)) << bad;
  // Unknown members of dns: skipped, unless strict.
  auto extra = replace(s, "\"domain\": \"corp.mesh\"", "\"domain\": \"corp.mesh\", \"x\": [1]");
  EXPECT_TRUE(agrees(extra, false));
  EXPECT_FALSE(agrees(extra, true));
}

TEST(NetMapFast, HookSeesEachPeerAsItIsRead) {
  Keys k;
  std::vector<std::string> seen;
  PeerHook hook = [&](const MapPeer& p) { seen.push_back(p.public_key.to_base64()); };
  auto m = parse_netmap_fast(sample(k), {}, hook);
  ASSERT_TRUE(m);
  ASSERT_EQ(seen.size(), m->peers.size());
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], m->peers[i].public_key.to_base64());
  // A map that fails later was seen in part: the hook's caller must wait
  // for the result before trusting what it saw.
  seen.clear();
  auto dup = nlohmann::json::parse(sample(k));
  dup["peers"].push_back(dup["peers"][0]);
  EXPECT_FALSE(parse_netmap_fast(dup.dump(), {}, hook));
  EXPECT_EQ(seen.size(), dup["peers"].size());
  EXPECT_FALSE(parse_netmap_text(dup.dump(), "dup", {}, hook));
}

TEST(NetMapFast, DeclinesWhatItLeavesToTheSlowPath) {
  Keys k;
  const std::string s = sample(k);
  // Each either valid but unusual (the slow path accepts it) or invalid
  // (the slow path reports it): the fast path must never decide.
  std::vector<std::pair<std::string, std::string>> edits = {
      {"\"name\": \"a\"", "\"name\": \"a\\u0041\""},    // escape: valid
      {"\"name\": \"a\"", "\"name\": null"},            // null: absent
      {"\"keepalive\": 25", "\"keepalive\": 25.0"},     // a float
      {"\"keepalive\": 25", "\"keepalive\": 2.5e1"},
      {"\"keepalive\": 25", "\"keepalive\": 1E400"},    // nlohmann cannot hold it
      {"\"keepalive\": 25", "\"keepalive\": 65536"},
      {"\"keepalive\": 25", "\"keepalive\": -1"},
      {"\"keepalive\": 25", "\"keepalive\": 025"},
      {"\"keepalive\": 25", "\"keepalive\": \"25\""},
      {"\"keepalive\": 25", "\"keepalive\": 25, \"keepalive\": 26"},  // duplicate
      {"\"name\": \"a\"", "\"name\": \"a\xc3\""},        // truncated UTF-8
      {"\"name\": \"a\"", "\"name\": \"\xed\xa0\x80\""}, // a surrogate
      {"\"name\": \"a\"", "\"name\": \"\xc0\xaf\""},     // overlong
      {"\"name\": \"a\"", "\"name\": \"a\tb\""},         // raw control character
      {"\"serial\": 7", "\"serial\": -7"},
      {"\"serial\": 7", "\"serial\": 12345678901234567890"},
      {"\"version\": 1", "\"version\": 2"},
      {"\"version\": 1, ", ""},
      {"\"mtu\": 1380", "\"mtu\": 1279"},
      {"\"100.64.0.2/32\"]", "\"100.64.0.2/33\"]"},
      {"\"addresses\": [\"100.64.0.3/32\", \"fd7a:115c:a1e0::3/128\"]", "\"addresses\": []"},
      {"\"203.0.113.5:40000\"", "\"203.0.113.5:0\""},
      {"\"kind\": \"srflx\"", "\"kind\": \"other\""},
      {"\"proto\": \"icmp\"", "\"proto\": \"icmp\", \"ports\": [1]"},
      {"\"8000-8080\"", "\"8080-8000\""},
      {"[22,", "[0,"},
      {"\"transport\": \"tls\"", "\"transport\": \"sctp\""},
      {"\"password\": \"x\",", ""},
      {"\"username\": \"1999999999:me\",", "\"username\": 5,"},
      {"\"addresses\": [\"100.64.0.2/32\"]", "\"addresses\": [\"100.64.0.3/32\"]"},  // overlap
      {"\"stun\": [\"203.0.113.1:3478\"]", "\"stun\": [\"a\", 1]"},
      {"\"firewall\": {", "\"firewall\": {\"inbound\": [], "},
      {"\"groups\": [\"x\", \"y\"]", "\"groups\": \"x\""},
      {"    ]", "    ,]"},  // trailing comma
  };
  edits.push_back({"\"public_key\": \"" + k.b + "\"", "\"public_key\": \"" + k.a + "\""});  // duplicate peer
  edits.push_back({"\"public_key\": \"" + k.b + "\"", "\"public_key\": \"" + k.self + "\""});
  edits.push_back({"\"public_key\": \"" + k.b + "\"", "\"public_key\": \"" + k.b.substr(1) + "\""});
  edits.push_back({"\"preshared_key\": \"" + k.psk + "\"", "\"preshared_key\": \"xx\""});
  for (const auto& [from, to] : edits) {
    auto t = replace(s, from, to);
    for (bool strict : {false, true}) EXPECT_FALSE(agrees(t, strict)) << to;
  }
  for (std::string t : {std::string(""), std::string("  "), std::string("[]"), std::string("{}"),
                        s + " x", s + "{}", "\xef\xbb\xbf" + s, s.substr(0, s.size() / 2)})
    for (bool strict : {false, true}) EXPECT_FALSE(agrees(t, strict));
  // Every prefix of the map: truncated input is never taken.
  for (size_t n = 0; n + 1 < s.size(); n += 7) EXPECT_FALSE(parse_netmap_fast(s.substr(0, n)));
}

TEST(NetMapFast, AddressAndKeySpellingsAgree) {
  Keys k;
  const std::string s = sample(k);
  // The quick IPv4/key readers take a subset; the rest must reach the
  // general parsers with the same outcome, valid or not.
  std::vector<std::pair<std::string, std::string>> edits = {
      {"\"100.64.0.2/32\"", "\"100.64.0.2/032\""},   // general parser: valid
      {"\"100.64.0.2/32\"", "\"100.064.0.2/32\""},   // leading zero: invalid
      {"\"100.64.0.2/32\"", "\"100.64.0.2\""},       // bare address: /32
      {"\"100.64.0.2/32\"", "\"100.64.0.256/32\""},
      {"\"100.64.0.2/32\"", "\"100.64.0/32\""},
      {"\"100.64.0.2/32\"", "\"100.64.0.2/-0\""},
      {"\"100.64.0.2/32\"", "\"100.64.0.2/\""},
      {"\"100.64.0.2/32\"", "\"100.64.0.2/33\""},
      {"\"100.64.0.2/32\"", "\"0.0.0.0/0\""},
      {"\"203.0.113.5:40000\"", "\"203.0.113.5:040000\""},
      {"\"203.0.113.5:40000\"", "\"203.0.113.5:65536\""},
      {"\"203.0.113.5:40000\"", "\"203.0.113.5:00000\""},
      {"\"203.0.113.5:40000\"", "\"203.0.113.5:\""},
      {"\"203.0.113.5:40000\"", "\"203.0.113.05:1\""},
      {"\"203.0.113.5:40000\"", "\"255.255.255.255:65535\""},
      {"\"public_key\": \"" + k.b + "\"", "\"public_key\": \" " + k.b + " \""},  // trimmed: valid
      {"\"public_key\": \"" + k.b + "\"", "\"public_key\": \"" + k.b.substr(0, 42) + "==\""},
      {"\"public_key\": \"" + k.b + "\"", "\"public_key\": \"" + k.b.substr(0, 42) + "B=\""},
      {"\"public_key\": \"" + k.b + "\"", "\"public_key\": \"" + k.b.substr(0, 42) + "-=\""},
      {"\"public_key\": \"" + k.b + "\"", "\"public_key\": \"" + k.b.substr(0, 43) + "\""},
  };
  for (const auto& [from, to] : edits)
    for (bool strict : {false, true}) agrees(replace(s, from, to), strict);
  // Every canonical key (spare bits zero) takes the quick reader.
  for (int i = 0; i < 64; ++i) {
    Keys other;
    EXPECT_TRUE(agrees(replace(s, k.b, other.b), true));
  }
}

TEST(NetMapFast, GuessListenPortTakesTheLastMember) {
  Keys k;
  EXPECT_EQ(guess_listen_port(sample(k)), parse_netmap_text(sample(k), "m")->self.listen_port);
  EXPECT_EQ(guess_listen_port(R"({"self":{"listen_port":51820},"peers":[]})"), 51820);
  EXPECT_EQ(guess_listen_port(R"({"peers":[{"listen_port": 1}],"self":{"listen_port" :  7 }})"), 7);
  EXPECT_EQ(guess_listen_port(R"({"self":{"listen_port":7},"peers":[{"listen_port":9,"x":1}]})"), 9);
  EXPECT_EQ(guess_listen_port(R"({"self":{"listen_port":0}})"), 0);
  EXPECT_EQ(guess_listen_port(R"({"self":{"listen_port":65535}})"), 65535);
  for (const char* no : {R"({"self":{}})", R"({"self":{"listen_port":65536}})",
                         R"({"self":{"listen_port":-1}})", R"({"self":{"listen_port":1.5}})",
                         R"({"self":{"listen_port":"1"}})", R"({"self":{"listen_port":123456}})",
                         R"({"self":{"listen_port":)", R"({"self":{"listen_port" 1}})", ""})
    EXPECT_EQ(guess_listen_port(no), std::nullopt) << no;
}

TEST(NetMapFast, ErrorsAreTheValidatorsOwn) {
  Keys k;
  auto t = replace(sample(k), "\"public_key\": \"" + k.b + "\"", "\"public_key\": \"nope\"");
  auto m = parse_netmap_text(t, "m.json");
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), Exit::DataErr);
  EXPECT_NE(m.status().message().find("m.json: peers[1].public_key: "), std::string::npos)
      << m.status().message();
  auto syntax = parse_netmap_text("{\"version\": 1,", "m.json");
  ASSERT_FALSE(syntax.is_ok());
  EXPECT_EQ(syntax.status().message(), parse_json("{\"version\": 1,", "m.json").status().message());
}

}  // namespace
}  // namespace mesh
