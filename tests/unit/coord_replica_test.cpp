// Replicas: a change as the PostgreSQL store logs it (coord/store.h,
// Change), applied to another replica's model (coord/replica.h), gives the
// same maps, byte for byte, with the writer's serials, incrementally.
#include <gtest/gtest.h>

#include <set>

#include <nlohmann/json.hpp>

#include "coord/model.h"
#include "coord_fixture.h"
#include "coord/replica.h"
#include "coord/revoked.h"

using namespace mesh;
using namespace mesh::coord;

namespace {

using test::config;
using test::policy;

// The writer's side: a model plus what its store would log per mutation.
struct Writer {
  Model m{config()};

  std::unique_ptr<Peer> make_peer(const std::string& name, std::vector<std::string> groups) {
    return test::make_peer(m, name, std::move(groups));
  }

  // As Coordinator::persist and the PostgreSQL store write it: the rows,
  // the changed maps' serials (runs of one serial, or the older object by
  // id when legacy_serials) and the counters.
  bool legacy_serials = false;
  Json change(const Changes& ch, std::vector<uint32_t> put, std::vector<uint32_t> del,
              const std::string& policy_text = "") {
    Json w = Json::object();
    for (uint32_t id : put) w["peers"][std::to_string(id)] = m.by_id(id)->to_record();
    for (uint32_t id : del) w["peers"][std::to_string(id)] = nullptr;
    std::map<std::pair<uint64_t, int64_t>, std::vector<uint32_t>> runs;
    for (uint32_t id : ch.changed) {
      const Peer* p = m.by_id(id);
      if (p && legacy_serials) w["serials"][std::to_string(id)] = Json::array({p->serial, p->generated_at});
      if (p && !legacy_serials) runs[{p->serial, p->generated_at}].push_back(id);
    }
    for (const auto& [k, ids] : runs) w["serial_runs"].push_back(Json::array({k.first, k.second, ids}));
    w["meta"]["serial_counter"] = std::to_string(m.serial_counter());
    w["meta"]["next_host"] = std::to_string(m.next_host());
    w["meta"]["next_peer_id"] = std::to_string(m.new_peer_id());
    w["meta"]["cred_window"] = std::to_string(m.cred_window());
    if (!policy_text.empty()) w["meta"]["policy"] = policy_text;
    return w;
  }
};

void expect_same(const Model& a, const Model& b) {
  ASSERT_EQ(a.peer_count(), b.peer_count());
  EXPECT_EQ(a.serial_counter(), b.serial_counter());
  EXPECT_EQ(a.next_host(), b.next_host());
  for (const Peer* p : a.peers()) {
    const Peer* q = b.by_id(p->id);
    ASSERT_NE(q, nullptr) << p->name;
    EXPECT_EQ(p->serial, q->serial) << p->name;
    EXPECT_EQ(a.map_json(*p), b.map_json(*q)) << p->name;
  }
}

}  // namespace

TEST(CoordReplica, AppliedChangesGiveTheWritersMapsAndSerials) {
  Writer w;
  Model r(config());
  std::vector<SetupKey> keys;
  RevocationList rev;
  std::string ptext = R"({"groups":{"web":{},"db":{},"ops":{}},"rules":[{"name":"web-db","src":["web"],"dst":["db"],"proto":"tcp","ports":[5432]},{"name":"ops-all","src":["ops"],"dst":["all"],"proto":"any"}]})";
  w.m.set_policy(policy(ptext), 100);
  ASSERT_TRUE(apply_change(r, keys, rev, w.change({}, {}, {}, ptext), 100));
  std::vector<uint32_t> ids;
  for (auto [name, group] : {std::pair{"web1", "web"}, {"web2", "web"}, {"db1", "db"},
                             {"db2", "db"}, {"ops1", "ops"}, {"other", "x"}}) {
    auto p = w.make_peer(name, {group});
    uint32_t id = p->id;
    ids.push_back(id);
    Changes ch = w.m.add_peer(std::move(p), 101);
    auto res = apply_change(r, keys, rev, w.change(ch, {id}, {}), 101);
    ASSERT_TRUE(res) << res.status().message();
    EXPECT_TRUE(res->maps_changed);
    expect_same(w.m, r);
  }
  auto full_before = r.stats().full_recomputes;
  // Regroup, rename, announce endpoints, disable, delete: each applied
  // incrementally (no full recompute on the replica).
  Changes ch = w.m.update_peer(ids[0], true, 102, [](Peer& q) { q.groups = {"db"}; });
  ASSERT_TRUE(apply_change(r, keys, rev, w.change(ch, {ids[0]}, {}), 102));
  expect_same(w.m, r);
  ch = w.m.rename_peer(ids[2], "db-renamed", 103);
  w.legacy_serials = true;  // a change logged by an older replica
  ASSERT_TRUE(apply_change(r, keys, rev, w.change(ch, {ids[2]}, {}), 103));
  w.legacy_serials = false;
  expect_same(w.m, r);
  EXPECT_EQ(r.by_name("db-renamed")->id, ids[2]);
  Json cj{{"endpoint", "203.0.113.7:51820"}, {"kind", "host"}};
  auto cand = parse_candidate(JsonView(cj, "candidate"), false);
  ASSERT_TRUE(cand);
  ch = w.m.update_peer(ids[3], false, 104, [&](Peer& q) {
    q.endpoints = {*cand};
    q.endpoints_at = 104;
  });
  auto announced = apply_change(r, keys, rev, w.change(ch, {ids[3]}, {}), 104);
  ASSERT_TRUE(announced);
  expect_same(w.m, r);
  // An announce concerns the announcer and the maps it is in: only their
  // watchers are woken on the replica.
  ASSERT_FALSE(ch.changed.empty());
  EXPECT_FALSE(announced->everyone);
  std::set<uint32_t> woken(announced->woken.begin(), announced->woken.end());
  std::set<uint32_t> expected(ch.changed.begin(), ch.changed.end());
  expected.insert(ids[3]);
  EXPECT_EQ(woken, expected);
  ch = w.m.update_peer(ids[4], true, 105, [](Peer& q) { q.disabled = true; });
  ASSERT_TRUE(apply_change(r, keys, rev, w.change(ch, {ids[4]}, {}), 105));
  expect_same(w.m, r);
  ch = w.m.remove_peer(ids[1], 106);
  ASSERT_TRUE(apply_change(r, keys, rev, w.change(ch, {}, {ids[1]}), 106));
  expect_same(w.m, r);
  EXPECT_EQ(r.stats().full_recomputes, full_before);
  // Applying a change twice changes nothing (a replica may see its own).
  Json again = w.change(ch, {}, {ids[1]});
  ASSERT_TRUE(apply_change(r, keys, rev, again, 106));
  expect_same(w.m, r);
  // A policy change recomputes every map on both sides.
  std::string p2 = R"({"groups":{"web":{},"db":{},"ops":{}},"rules":[{"src":["db"],"dst":["all"]}]})";
  ch = w.m.set_policy(policy(p2), 107);
  auto repoliced = apply_change(r, keys, rev, w.change(ch, {}, {}, p2), 107);
  ASSERT_TRUE(repoliced);
  EXPECT_TRUE(repoliced->everyone);
  expect_same(w.m, r);
  // A new peer after all that gets the next address on both.
  auto p = w.make_peer("late", {"web"});
  uint32_t id = p->id;
  ch = w.m.add_peer(std::move(p), 108);
  ASSERT_TRUE(apply_change(r, keys, rev, w.change(ch, {id}, {}), 108));
  expect_same(w.m, r);
  EXPECT_EQ(*w.m.allocate_host(), *r.allocate_host());
  EXPECT_EQ(w.m.new_peer_id(), r.new_peer_id());
}

TEST(CoordReplica, SetupKeysAreUpsertedById) {
  Model r(config());
  std::vector<SetupKey> keys;
  RevocationList rev;
  SetupKey k;
  k.id = 3;
  k.name = "k";
  k.hash = "ab";
  k.reusable = true;
  k.usage_limit = 2;
  Json rec = k.to_json();
  rec["hash"] = k.hash;
  ASSERT_TRUE(apply_change(r, keys, rev, Json{{"setup_keys", {{"3", rec}}}}, 1));
  ASSERT_EQ(keys.size(), 1u);
  rec["used"] = 2;
  ASSERT_TRUE(apply_change(r, keys, rev, Json{{"setup_keys", {{"3", rec}}}}, 2));
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].used, 2);
  EXPECT_EQ(keys[0].hash, "ab");
  EXPECT_FALSE(keys[0].unusable_reason(3).empty());
  EXPECT_FALSE(apply_change(r, keys, rev, Json{{"setup_keys", {{"4", Json{{"id", 4}}}}}}, 3));
}

TEST(CoordReplica, ADnsDomainChangeReachesTheReplicasMapsWithTheWritersSerials) {
  Writer w;
  Model r{config()};
  RevocationList rev;
  std::vector<SetupKey> keys;
  w.m.rebuild(100);
  r.rebuild(100);
  std::vector<uint32_t> ids;
  for (const char* name : {"a", "b"}) {
    auto p = w.make_peer(name, {"g"});
    ids.push_back(p->id);
    Changes ch = w.m.add_peer(std::move(p), 101);
    ASSERT_TRUE(apply_change(r, keys, rev, w.change(ch, {ids.back()}, {}), 101));
  }
  expect_same(w.m, r);
  // As serve --dns-domain does on the writer: a new domain, every map reissued.
  w.m.set_dns_domain("corp.example");
  Changes ch = w.m.reissue_all(102);
  Json what = w.change(ch, {}, {});
  what["meta"]["dns_domain"] = "corp.example";
  auto res = apply_change(r, keys, rev, what, 102);
  ASSERT_TRUE(res) << res.status().message();
  EXPECT_TRUE(res->maps_changed);
  EXPECT_EQ(r.config().dns_domain, "corp.example");
  expect_same(w.m, r);
  for (const Peer* p : r.peers())
    EXPECT_NE(r.map_json(*p).find("\"dns\":{\"domain\":\"corp.example\"}"), std::string::npos);
}

// A replica applies changes without computing digests (it adopts the
// writer's serials); its own next write computes them first, over the
// content they stand for, so it sees exactly the maps the writer would.
TEST(CoordReplica, AReplicaWritingAfterAppliedChangesChangesTheMapsTheWriterWould) {
  Writer w;
  Model r(config());
  std::vector<SetupKey> keys;
  RevocationList rev;
  std::string p1 = R"({"groups":{"web":{},"db":{}},"rules":[{"name":"web-db","src":["web"],"dst":["db"],"proto":"tcp","ports":[5432]}]})";
  std::string p2 = R"({"groups":{"web":{},"db":{}},"rules":[{"name":"any","src":["all"],"dst":["all"],"proto":"any"}]})";
  w.m.set_policy(policy(p1), 100);
  ASSERT_TRUE(apply_change(r, keys, rev, w.change({}, {}, {}, p1), 100));
  std::vector<uint32_t> ids;
  for (auto [name, group] : {std::pair{"web1", "web"}, {"web2", "web"}, {"db1", "db"}, {"x", "x"}}) {
    auto p = w.make_peer(name, {group});
    ids.push_back(p->id);
    Changes ch = w.m.add_peer(std::move(p), 101);
    ASSERT_TRUE(apply_change(r, keys, rev, w.change(ch, {ids.back()}, {}), 101));
  }
  expect_same(w.m, r);
  EXPECT_GT(r.stale_digests(), 0u);
  // The same announce written on both.
  auto announce = [&](Model& m, int64_t now) {
    Json cj{{"endpoint", "203.0.113.7:51820"}, {"kind", "host"}};
    auto c = parse_candidate(JsonView(cj, "candidate"), false);
    return m.update_peer(ids[2], false, now, [&](Peer& q) {
      q.endpoints = {*c};
      q.endpoints_at = now;
    });
  };
  Changes wa = announce(w.m, 102), ra = announce(r, 102);
  EXPECT_EQ(r.stale_digests(), 0u);
  ASSERT_FALSE(wa.changed.empty());
  EXPECT_EQ(ra.changed, wa.changed);
  EXPECT_EQ(ra.serial, wa.serial);
  expect_same(w.m, r);
  // The writer's policy change, applied without digests; then the old
  // policy back, written on both. The replica's digests from before that
  // change match the maps as they are back to: compared with those, it
  // would see no change and keep serving them under the serials of p2.
  Changes wb = w.m.set_policy(policy(p2), 103);
  ASSERT_FALSE(wb.changed.empty());
  ASSERT_TRUE(apply_change(r, keys, rev, w.change(wb, {}, {}, p2), 103));
  expect_same(w.m, r);
  Changes wc = w.m.set_policy(policy(p1), 104), rc = r.set_policy(policy(p1), 104);
  ASSERT_FALSE(wc.changed.empty());
  EXPECT_EQ(rc.changed, wc.changed);
  expect_same(w.m, r);
}
