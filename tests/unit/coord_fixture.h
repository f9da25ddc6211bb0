// Shared pieces of the coordinator model's unit tests: the overlay they
// allocate from, a peer as a join makes it, and a policy from its text.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "coord/model.h"
#include "coord/policy.h"
#include "core/json.h"

namespace mesh::coord::test {

inline ModelConfig config() {
  ModelConfig c;
  c.ipv4 = *Prefix::parse("100.64.0.0/10");
  c.ipv6 = *Prefix::parse("fd00:1:2::/48");
  return c;
}

// Not yet added to `m`: the caller adds or loads it.
inline std::unique_ptr<Peer> make_peer(Model& m, const std::string& name,
                                       std::vector<std::string> groups) {
  auto p = std::make_unique<Peer>();
  p->id = m.new_peer_id();
  p->name = name;
  p->public_key = SecretKey::generate_private().public_key();
  p->host_index = *m.allocate_host();
  p->ipv4 = m.host_v4(p->host_index);
  p->ipv6 = m.host_v6(p->host_index);
  p->listen_port = m.pick_listen_port(p->id);
  p->groups = std::move(groups);
  return p;
}

inline Policy policy(const std::string& text) {
  auto j = parse_json(text, "p");
  EXPECT_TRUE(j) << j.status().message();
  if (!j) return Policy{};
  auto p = parse_policy(*j, "p");
  EXPECT_TRUE(p) << p.status().message();
  return p ? *p : Policy{};
}

}  // namespace mesh::coord::test
