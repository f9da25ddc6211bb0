#include "coord/candidates.h"

namespace mesh::coord {
namespace {

struct Refused {
  const char* prefix;
  const char* why;
};

// RFC 6890 special-purpose ranges a peer cannot be reached at from another host.
constexpr Refused kRefused[] = {
    {"0.0.0.0/8", "an unspecified (\"this network\") address"},
    {"127.0.0.0/8", "a loopback address"},
    {"169.254.0.0/16", "a link-local address"},
    {"224.0.0.0/4", "a multicast address"},
    {"240.0.0.0/4", "a reserved or broadcast address"},
    {"::/128", "the unspecified address"},
    {"::1/128", "a loopback address"},
    {"::ffff:0:0/96", "an IPv4-mapped IPv6 address (announce the IPv4 address)"},
    {"fe80::/10", "a link-local address (it needs a zone no other host shares)"},
    {"ff00::/8", "a multicast address"},
};

}  // namespace

Status check_candidate(const Candidate& c, const std::vector<Prefix>& overlay) {
  std::string text = c.endpoint.to_string();
  auto refuse = [&](const std::string& why) {
    return data_error(text + " is " + why + "; candidates must be addresses other peers reach "
                             "this node at");
  };
  if (c.endpoint.port == 0) return refuse("port 0");
  for (const auto& r : kRefused) {
    auto p = Prefix::parse(r.prefix);
    if (p && p->addr.family == c.endpoint.ip.family && p->contains(c.endpoint.ip))
      return refuse(r.why);
  }
  for (const auto& p : overlay)
    if (p.addr.family == c.endpoint.ip.family && p.contains(c.endpoint.ip))
      return refuse("inside the overlay prefix " + p.canonical().to_string() +
                    " (a path through the mesh cannot carry the mesh)");
  return Status::ok();
}

}  // namespace mesh::coord
