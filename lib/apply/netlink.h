// A netlink socket (libmnl) with RAII and batched request/ack handling,
// shared by the rtnetlink (rtnl.h) and WireGuard generic netlink (wgnl.h)
// clients. Messages are built and parsed by pure functions in those headers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/status.h"

struct mnl_socket;
struct nlmsghdr;

namespace mesh::apply {

using NlMsg = std::vector<uint8_t>;  // one complete netlink message

class NlSocket {
 public:
  // bus: NETLINK_ROUTE or NETLINK_GENERIC.
  static Result<NlSocket> open(int bus);
  NlSocket(NlSocket&&) noexcept;
  NlSocket& operator=(NlSocket&&) noexcept;
  ~NlSocket();

  uint32_t next_seq() { return seq_++; }
  uint32_t portid() const { return portid_; }

  // Sends the messages (each must request NLM_F_ACK), packed into as few
  // datagrams as fit, and waits for every ack. The first error is returned
  // (errno mapped by `on_error` if given, else errno_status); later messages
  // are still processed by the kernel. `tolerate` lists errnos treated as ok.
  Status transact(const std::vector<NlMsg>& msgs, const std::vector<int>& tolerate = {});

  // Sends one dump/get request and calls `cb` for every reply message until
  // NLMSG_DONE (dump) or the single answer. Errors from cb stop the walk.
  Status dump(const NlMsg& req, const std::function<Status(const nlmsghdr*)>& cb);

 private:
  NlSocket() = default;
  mnl_socket* nl_ = nullptr;
  uint32_t portid_ = 0;
  uint32_t seq_ = 1;
};

// Starts a message in `buf` (resized to fit) and returns the header.
nlmsghdr* nl_put_header(NlMsg* buf, uint16_t type, uint16_t flags, uint32_t seq,
                        size_t capacity = 4096);
// Truncates buf to the header's nlmsg_len.
void nl_finish(NlMsg* buf);

}  // namespace mesh::apply

// C++-friendly forms of libmnl's mnl_attr_for_each / _nested (the C macros
// rely on implicit void* conversions). `a` is declared as const nlattr*.
#define MESH_NL_ATTRS(a, h, offset)                                                           \
  for (const nlattr* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(h, offset)); \
       mnl_attr_ok(a, static_cast<int>(static_cast<const char*>(mnl_nlmsg_get_payload_tail(h)) - \
                                       reinterpret_cast<const char*>(a)));                     \
       a = static_cast<const nlattr*>(mnl_attr_next(a)))
#define MESH_NL_NESTED(a, nest)                                                                \
  for (const nlattr* a = static_cast<const nlattr*>(mnl_attr_get_payload(nest));               \
       mnl_attr_ok(a, static_cast<int>(static_cast<const char*>(mnl_attr_get_payload(nest)) +  \
                                       mnl_attr_get_payload_len(nest) -                        \
                                       reinterpret_cast<const char*>(a)));                     \
       a = static_cast<const nlattr*>(mnl_attr_next(a)))
