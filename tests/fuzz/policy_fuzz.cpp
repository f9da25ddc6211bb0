// libFuzzer target: the access policy (man/mesh-policy.5), which the
// coordinator reads from its state and from /v1/admin/policy bodies, and the
// service syntax ("22/tcp", "icmp", "any") of its tests and of
// /v1/admin/policy/check. Invariants: no crash, leak or UB; whatever parses
// serialises and parses back to the same policy, and that copy gives the same
// verdict as the original for peers drawn from the policy's own groups and
// members; a service that parses prints as text that parses back to it.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "coord/policy.h"
#include "core/json.h"

using namespace mesh;
using namespace mesh::coord;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto s = Service::parse(text)) {
    auto again = Service::parse(s->to_string());
    if (!again || *again != *s) __builtin_trap();
  }
  auto j = parse_json(text, "fuzz");
  if (!j) return 0;
  auto p = parse_policy(*j, "fuzz");
  if (!p) return 0;
  Json out = policy_to_json(*p);
  auto q = parse_policy(out, "again");
  if (!q || policy_to_json(*q) != out) __builtin_trap();

  // A few peers the rules can select: one per group (named after a member
  // when there is one, carrying the group's first tag), plus an outsider.
  std::vector<PeerAttrs> peers;
  uint8_t host = 1;
  for (const auto& [name, g] : p->groups) {
    if (peers.size() == 4) break;
    PeerAttrs a;
    a.name = g.members.empty() ? "peer-" + std::to_string(host) : g.members.front();
    a.groups = {name};
    if (!g.tags.empty()) a.tags = {g.tags.front()};
    a.addresses = {*IpAddr::parse("100.64.0." + std::to_string(host++))};
    peers.push_back(a);
  }
  peers.push_back(PeerAttrs{"outsider", {}, {}, {*IpAddr::parse("198.51.100.7")}});
  std::vector<Service> services = {*Service::parse("any"), *Service::parse("icmp"),
                                   *Service::parse("22/tcp"), *Service::parse("53/udp")};
  for (size_t i = 0; i < p->tests.size() && i < 8; ++i) services.push_back(p->tests[i].service);
  for (const auto& a : peers)
    for (const auto& b : peers)
      for (const auto& s : services) {
        Verdict v1 = evaluate(*p, a, b, s), v2 = evaluate(*q, a, b, s);
        if (v1.allow != v2.allow || v1.rule != v2.rule) __builtin_trap();
      }
  return 0;
}
