// Map deltas (coord/delta.h, mesh-netmap(5), Deltas): the edit plan, the
// watcher's merge, and the model's delta text against its whole map.
#include "coord/delta.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coord_fixture.h"

namespace mesh::coord {
namespace {

using test::config;
using test::make_peer;
using test::policy;

std::vector<SentEntry> entries(std::initializer_list<std::pair<uint32_t, uint32_t>> l) {
  std::vector<SentEntry> v;
  for (auto [id, ver] : l) v.push_back({id, ver});
  return v;
}

TEST(CoordDelta, DiffKeepsUnchangedEntriesAndResendsChangedOnes) {
  auto old = entries({{1, 10}, {2, 20}, {4, 40}, {7, 70}});
  auto now = entries({{1, 10}, {2, 21}, {3, 30}, {7, 70}, {9, 90}});
  PeerEdits e = diff_peers(old, now);
  // 2 changed (goes, comes back), 4 left, 3 and 9 are new.
  EXPECT_EQ(e.removed, (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(e.inserted, (std::vector<uint32_t>{1, 2, 4}));
  EXPECT_TRUE(diff_peers(now, now).removed.empty());
  EXPECT_TRUE(diff_peers(now, now).inserted.empty());
  // kResend is sent every time, even when nothing else moved.
  auto routed = entries({{1, 10}, {2, kResend}});
  e = diff_peers(routed, routed);
  EXPECT_EQ(e.removed, (std::vector<uint32_t>{1}));
  EXPECT_EQ(e.inserted, (std::vector<uint32_t>{1}));
  e = diff_peers({}, routed);
  EXPECT_TRUE(e.removed.empty());
  EXPECT_EQ(e.inserted, (std::vector<uint32_t>{0, 1}));
  e = diff_peers(routed, {});
  EXPECT_EQ(e.removed, (std::vector<uint32_t>{0, 1}));
}

Json peer_named(const std::string& n) { return Json{{"name", n}}; }

Json base_map() {
  return Json{{"serial", 7}, {"version", 1},
              {"peers", Json::array({peer_named("a"), peer_named("b"), peer_named("c")})}};
}

Result<Json> apply_text(const std::string& delta) {
  auto d = parse_json(delta, "d");
  if (!d) return d.status();
  return apply_delta(base_map(), *d, "d");
}

TEST(CoordDelta, ApplyRemovesInsertsAndKeepsTheOtherMembers) {
  auto out = apply_text(R"({"serial": 8, "version": 1, "self": {"name": "me"},
      "peer_changes": {"base": 7, "count": 4, "removed": [1],
                       "inserted": [[0, {"name": "z"}], [3, {"name": "b"}]]}})");
  ASSERT_TRUE(out) << out.status().message();
  std::vector<std::string> names;
  for (const auto& p : (*out)["peers"]) names.push_back(p["name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"z", "a", "c", "b"}));
  EXPECT_EQ((*out)["serial"], 8);
  EXPECT_EQ((*out)["self"]["name"], "me");
  EXPECT_FALSE(out->contains("peer_changes"));
}

TEST(CoordDelta, ApplyRefusesADeltaThatDoesNotFitTheHeldMap) {
  struct Case {
    const char* changes;
    const char* why;
  } cases[] = {
      {R"({"base": 6, "count": 3, "removed": [], "inserted": []})", "serial 6"},
      {R"({"base": 7, "count": 3, "removed": [3], "inserted": [[2, {}]]})", "out of range"},
      {R"({"base": 7, "count": 3, "removed": [1, 1], "inserted": []})", "ascend"},
      {R"({"base": 7, "count": 4, "removed": [], "inserted": []})", "do not follow"},
      {R"({"base": 7, "count": 4, "removed": [], "inserted": [[4, {}]]})", "out of range"},
      {R"({"base": 7, "count": 5, "removed": [], "inserted": [[2, {}], [2, {}]]})", "ascend"},
      {R"({"base": 7, "count": 4, "removed": [], "inserted": [[1, "x"]]})", "peer object"},
      {R"({"base": 7, "count": 4, "removed": [], "inserted": [[1]]})", "[INDEX, PEER]"},
  };
  for (const auto& c : cases) {
    auto out = apply_text(std::string(R"({"serial": 8, "peer_changes": )") + c.changes + "}");
    ASSERT_FALSE(out) << c.changes;
    EXPECT_EQ(out.status().code(), Exit::DataErr);
    EXPECT_NE(out.status().message().find(c.why), std::string::npos) << out.status().message();
  }
  EXPECT_FALSE(apply_text(R"({"serial": 8})"));  // no peer_changes
}

TEST(CoordDelta, SentMapsHandOutOnlyTheSerialAsked) {
  SentMaps s;
  s.put(5, SentPeers{9, entries({{1, 1}})});
  EXPECT_FALSE(s.get(5, 8));
  ASSERT_TRUE(s.get(5, 9));
  EXPECT_EQ(s.get(5, 9)->entries.size(), 1u);
  EXPECT_FALSE(s.get(6, 9));
  EXPECT_EQ(s.size(), 1u);
  s.erase(5);
  EXPECT_FALSE(s.get(5, 9));
  EXPECT_EQ(s.size(), 0u);
  for (uint32_t id = 0; id < 200; ++id) s.put(id, SentPeers{1, {}});
  EXPECT_EQ(s.size(), 200u);
  s.clear();
  EXPECT_EQ(s.size(), 0u);
  EXPECT_FALSE(s.get(7, 1));
}

// The model's delta, merged into the map the watcher held, is the whole map
// the model would have sent, byte for byte, across every kind of change.
TEST(CoordDelta, ModelDeltasRebuildTheWholeMapExactly) {
  Model m(config());
  m.rebuild(0);
  m.set_policy(policy(R"({"groups": {"a": {}, "b": {}}, "rules": [
      {"name": "a-a", "src": ["a"], "dst": ["a"], "proto": "any"},
      {"name": "b-ssh", "src": ["b"], "dst": ["a"], "proto": "tcp", "ports": [22]}]})"),
               0);
  for (std::string n : {"a1", "a2", "a3", "a4", "a5"}) m.add_peer(make_peer(m, n, {"a"}), 1);
  for (std::string n : {"b1", "b2"}) m.add_peer(make_peer(m, n, {"b"}), 1);
  const uint32_t me = m.by_name("a1")->id;
  SentPeers sent;
  auto held = parse_json(m.map_text(*m.by_id(me), nullptr, &sent).text, "full");
  ASSERT_TRUE(held);
  ASSERT_EQ((*held)["peers"].size(), 6u);

  auto check = [&](const std::string& what, size_t want_inserted) {
    SCOPED_TRACE(what);
    const Peer& p = *m.by_id(me);
    SentPeers next;
    Model::MapText d = m.map_text(p, &sent, &next);
    ASSERT_TRUE(d.delta);
    auto dj = parse_json(d.text, "delta");
    ASSERT_TRUE(dj) << dj.status().message();
    EXPECT_EQ((*dj)["peer_changes"]["inserted"].size(), want_inserted);
    auto merged = apply_delta(*held, *dj, "delta");
    ASSERT_TRUE(merged) << merged.status().message();
    std::string whole = m.map_json(p);
    EXPECT_EQ(dump_json(*merged), whole);
    EXPECT_LT(d.text.size(), whole.size());
    held = std::move(*merged);
    sent = std::move(next);
  };
  m.add_peer(make_peer(m, "a6", {"a"}), 2);
  check("a join", 1);
  m.remove_peer(m.by_name("a3")->id, 3);
  check("a peer deleted", 0);
  m.rename_peer(m.by_name("a2")->id, "a2x", 4);
  check("a rename", 1);
  m.rekey_peer(m.by_name("a4")->id, SecretKey::generate_private().public_key(), 5);
  check("a key rotation", 1);
  m.update_peer(m.by_name("b1")->id, true, 6, [](Peer& q) { q.groups = {"a"}; });
  check("a group change", 1);
  m.set_policy(policy(R"({"groups": {"a": {}, "b": {}}, "rules": [
      {"name": "a-a", "src": ["a"], "dst": ["a"], "proto": "any"}]})"),
               7);
  check("a policy change that hides b2", 0);
  EXPECT_EQ((*held)["peers"].size(), 5u);
  // A delta from a map the model never sent cannot be applied to the map
  // held: its base serial differs.
  SentPeers other{sent.serial + 1, sent.entries};
  auto stale = parse_json(m.map_text(*m.by_id(me), &other, nullptr).text, "delta");
  ASSERT_TRUE(stale);
  EXPECT_FALSE(apply_delta(*held, *stale, "delta"));
}

}  // namespace
}  // namespace mesh::coord
