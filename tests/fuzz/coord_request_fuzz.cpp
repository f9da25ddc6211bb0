// libFuzzer target: the JSON request bodies the coordinator accepts
// (coord/requests.h: join, punch, setup-key create and revoke, the peer
// operations, policy check), each parser given the same document. The
// announce body is an endpoints document (endpoints_fuzz) and the policy
// bodies a policy (policy_fuzz). Invariants: no crash, leak or UB, and what
// a parser accepts satisfies what the handlers rely on (valid names,
// deduplicated lists, 1 to 64 distinct punch targets, consistent limits).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "coord/policy.h"
#include "coord/requests.h"
#include "core/json.h"

using namespace mesh;
using namespace mesh::coord;

namespace {
template <typename T>
bool distinct(const std::vector<T>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    for (size_t k = i + 1; k < v.size(); ++k)
      if (v[i] == v[k]) return false;
  return true;
}
bool valid_names(const std::vector<std::string>& v) {
  return distinct(v) && std::all_of(v.begin(), v.end(), [](const auto& s) { return valid_name(s); });
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto j = parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!j) return 0;
  if (auto r = parse_join_request(*j)) {
    if (!r->name.empty() && !valid_name(r->name)) __builtin_trap();
  }
  if (auto r = parse_punch_request(*j, 64)) {
    if (r->empty() || r->size() > 64 || !distinct(*r)) __builtin_trap();
  }
  const int64_t now = 1700000000;
  if (auto k = parse_setup_key_request(*j, now)) {
    if (!valid_name(k->name) || !valid_names(k->groups) || !valid_names(k->tags)) __builtin_trap();
    if (!k->reusable && k->usage_limit != 1) __builtin_trap();
    if (k->usage_limit < 0 || k->ephemeral_timeout <= 0) __builtin_trap();
    if (k->expires_at != 0 && k->expires_at <= now) __builtin_trap();
  }
  if (auto d = parse_duration(JsonView(*j, "fuzz"))) {
    if (*d < 0) __builtin_trap();
  }
  (void)parse_revoke_request(*j);
  for (std::string_view op : {"show", "delete", "disable", "enable", "rename", "set-groups"}) {
    auto r = parse_peer_op_request(*j, op);
    if (!r) continue;
    if (op == "rename" && !valid_name(r->name)) __builtin_trap();
    if (op == "set-groups" && !valid_names(r->groups)) __builtin_trap();
  }
  if (auto r = parse_policy_check_request(*j)) {
    auto again = Service::parse(r->service.to_string());
    if (!again || *again != r->service) __builtin_trap();
  }
  return 0;
}
