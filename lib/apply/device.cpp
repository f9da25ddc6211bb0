#include "apply/device.h"

#include <algorithm>

#include "core/key.h"

namespace mesh::apply {

static bool is_zero(const SecretKey& k) {
  for (auto b : k.bytes())
    if (b) return false;
  return true;
}

bool psk_equal(const std::optional<SecretKey>& a, const std::optional<SecretKey>& b) {
  bool az = !a || is_zero(*a), bz = !b || is_zero(*b);
  if (az || bz) return az == bz;
  return secure_equal(std::string_view(reinterpret_cast<const char*>(a->bytes().data()), kKeyLen),
                      std::string_view(reinterpret_cast<const char*>(b->bytes().data()), kKeyLen));
}

void normalise(PeerState* p) {
  for (auto& a : p->allowed_ips) a = a.canonical();
  std::sort(p->allowed_ips.begin(), p->allowed_ips.end());
  p->allowed_ips.erase(std::unique(p->allowed_ips.begin(), p->allowed_ips.end()),
                       p->allowed_ips.end());
  if (p->preshared_key && is_zero(*p->preshared_key)) p->preshared_key.reset();
}

void normalise(DeviceState* d) {
  for (auto& p : d->peers) normalise(&p);
  auto by_key = [](const PeerState& a, const PeerState& b) { return a.public_key < b.public_key; };
  // Usually sorted already (built from sorted lists): checking is cheaper
  // than sorting thousands of peers again.
  if (!std::is_sorted(d->peers.begin(), d->peers.end(), by_key))
    std::sort(d->peers.begin(), d->peers.end(), by_key);
  if (d->private_key && is_zero(*d->private_key)) d->private_key.reset();
}

}  // namespace mesh::apply
