#include <linux/genetlink.h>
#include <linux/netlink.h>

#include <cerrno>

#include "apply/backend.h"
#include "apply/rtnl.h"
#include "apply/wgnl.h"

namespace mesh::apply {
namespace {

Result<uint16_t> wireguard_family(NlSocket& nl) {
  uint16_t id = 0;
  MESH_TRY(nl.dump(genl_get_family("wireguard", nl.next_seq()), [&](const nlmsghdr* h) {
    id = genl_parse_family_id(h);
    return Status::ok();
  }));
  if (!id) return unavailable("the kernel has no wireguard generic netlink family");
  return id;
}

class Kernel final : public WgBackend {
 public:
  explicit Kernel(std::string ifname) : if_(std::move(ifname)) {}
  const char* name() const override { return "kernel"; }

  Status open() {
    if (family_) return Status::ok();
    MESH_ASSIGN(auto nl, NlSocket::open(NETLINK_GENERIC));
    auto fam = wireguard_family(nl);
    if (!fam) return unavailable("kernel WireGuard is not available (module not loaded?)");
    family_ = *fam;
    nl_.emplace(std::move(nl));
    return Status::ok();
  }

  Result<bool> exists() override {
    MESH_ASSIGN(auto rt, Rtnl::open());
    MESH_ASSIGN(auto link, rt.get_link(if_));
    return link.has_value() && link->kind == "wireguard";
  }

  Status create() override {
    MESH_ASSIGN(auto rt, Rtnl::open());
    return rt.create_link(if_, "wireguard");
  }

  Result<DeviceState> get() override {
    MESH_TRY(open());
    DeviceState d;
    MESH_TRY(nl_->dump(wgnl_get_device(family_, if_, nl_->next_seq()),
                       [&](const nlmsghdr* h) { return wgnl_parse_get(h, &d); }));
    normalise(&d);
    return d;
  }

  Status set(const DeviceUpdate& u) override {
    if (u.empty()) return Status::ok();
    MESH_TRY(open());
    uint32_t seq = nl_->next_seq();
    MESH_ASSIGN(auto msgs, wgnl_set_device(family_, if_, u, seq));
    for (size_t i = 1; i < msgs.size(); ++i) nl_->next_seq();
    return nl_->transact(msgs).with_context("WG_CMD_SET_DEVICE " + if_);
  }

  Status destroy() override {
    MESH_ASSIGN(auto rt, Rtnl::open());
    MESH_ASSIGN(auto link, rt.get_link(if_));
    if (link) MESH_TRY(rt.delete_link(link->ifindex));
    return Status::ok();
  }

 private:
  std::string if_;
  uint16_t family_ = 0;
  std::optional<NlSocket> nl_;
};

}  // namespace

std::unique_ptr<WgBackend> make_kernel_backend(const std::string& ifname) {
  return std::make_unique<Kernel>(ifname);
}

bool kernel_wireguard_available() {
  auto nl = NlSocket::open(NETLINK_GENERIC);
  return nl && wireguard_family(*nl).is_ok();
}

Result<std::unique_ptr<WgBackend>> choose_backend(const std::string& which,
                                                  const std::string& ifname,
                                                  const BackendEnv& env) {
  if (which == "userspace") return make_userspace_backend(ifname, env);
  if (which == "kernel") {
    if (!kernel_wireguard_available())
      return unavailable("--backend kernel: the wireguard kernel module is not available");
    return make_kernel_backend(ifname);
  }
  if (which != "auto")
    return usage_error("unknown backend '" + which + "' (expected auto, kernel or userspace)");
  auto us = make_userspace_backend(ifname, env);
  if (auto e = us->exists(); e && *e) return us;
  auto k = make_kernel_backend(ifname);
  if (auto e = k->exists(); e && *e) return k;
  if (kernel_wireguard_available()) return k;
  return us;
}

}  // namespace mesh::apply
