#include "apply/netlink.h"

#include <libmnl/libmnl.h>
#include <linux/netlink.h>

#include <cerrno>
#include <cstring>
#include <set>

namespace mesh::apply {

Result<NlSocket> NlSocket::open(int bus) {
  NlSocket s;
  s.nl_ = mnl_socket_open(bus);
  if (!s.nl_) return errno_status("netlink socket", errno);
  if (mnl_socket_bind(s.nl_, 0, MNL_SOCKET_AUTOPID) < 0) return errno_status("netlink bind", errno);
  s.portid_ = mnl_socket_get_portid(s.nl_);
  int one = 1;
  // Extended acks carry the kernel's error string; harmless if unsupported.
  mnl_socket_setsockopt(s.nl_, NETLINK_EXT_ACK, &one, sizeof one);
  mnl_socket_setsockopt(s.nl_, NETLINK_CAP_ACK, &one, sizeof one);
  return s;
}

NlSocket::NlSocket(NlSocket&& o) noexcept : nl_(o.nl_), portid_(o.portid_), seq_(o.seq_) {
  o.nl_ = nullptr;
}
NlSocket& NlSocket::operator=(NlSocket&& o) noexcept {
  if (this != &o) {
    if (nl_) mnl_socket_close(nl_);
    nl_ = o.nl_;
    portid_ = o.portid_;
    seq_ = o.seq_;
    o.nl_ = nullptr;
  }
  return *this;
}
NlSocket::~NlSocket() {
  if (nl_) mnl_socket_close(nl_);
}

nlmsghdr* nl_put_header(NlMsg* buf, uint16_t type, uint16_t flags, uint32_t seq, size_t capacity) {
  buf->assign(capacity, 0);
  nlmsghdr* h = mnl_nlmsg_put_header(buf->data());
  h->nlmsg_type = type;
  h->nlmsg_flags = flags;
  h->nlmsg_seq = seq;
  return h;
}

void nl_finish(NlMsg* buf) {
  auto* h = reinterpret_cast<nlmsghdr*>(buf->data());
  buf->resize(h->nlmsg_len);
}

Status NlSocket::transact(const std::vector<NlMsg>& msgs, const std::vector<int>& tolerate) {
  constexpr size_t kBatch = 32 * 1024;
  std::vector<uint8_t> rbuf(std::max<size_t>(MNL_SOCKET_BUFFER_SIZE, 32768));
  Status first;
  size_t i = 0;
  while (i < msgs.size()) {
    std::vector<uint8_t> batch;
    std::set<uint32_t> pending;
    while (i < msgs.size() && (batch.empty() || batch.size() + msgs[i].size() <= kBatch)) {
      const auto* h = reinterpret_cast<const nlmsghdr*>(msgs[i].data());
      pending.insert(h->nlmsg_seq);
      batch.insert(batch.end(), msgs[i].begin(), msgs[i].end());
      ++i;
    }
    if (mnl_socket_sendto(nl_, batch.data(), batch.size()) < 0)
      return errno_status("netlink send", errno);
    while (!pending.empty()) {
      ssize_t n = mnl_socket_recvfrom(nl_, rbuf.data(), rbuf.size());
      if (n < 0) return errno_status("netlink receive", errno);
      const auto* h = reinterpret_cast<const nlmsghdr*>(rbuf.data());
      int len = static_cast<int>(n);
      for (; mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) {
        if (h->nlmsg_type != NLMSG_ERROR) continue;
        const auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(h));
        pending.erase(h->nlmsg_seq);
        int err = -e->error;
        if (err == 0 || !first.is_ok()) continue;
        bool ok = false;
        for (int t : tolerate) ok = ok || t == err;
        if (!ok) first = errno_status("netlink", err);
      }
    }
  }
  return first;
}

Status NlSocket::dump(const NlMsg& req, const std::function<Status(const nlmsghdr*)>& cb) {
  if (mnl_socket_sendto(nl_, req.data(), req.size()) < 0) return errno_status("netlink send", errno);
  const auto* rh = reinterpret_cast<const nlmsghdr*>(req.data());
  bool is_dump = (rh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
  std::vector<uint8_t> rbuf(std::max<size_t>(MNL_SOCKET_BUFFER_SIZE, 65536));
  Status st;
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(nl_, rbuf.data(), rbuf.size());
    if (n < 0) return errno_status("netlink receive", errno);
    const auto* h = reinterpret_cast<const nlmsghdr*>(rbuf.data());
    int len = static_cast<int>(n);
    for (; mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) {
      if (h->nlmsg_seq != rh->nlmsg_seq) continue;
      if (h->nlmsg_type == NLMSG_DONE) return st;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(h));
        if (e->error == 0 && !is_dump) return st;
        if (e->error) return errno_status("netlink", -e->error);
        continue;
      }
      if (st.is_ok()) st = cb(h);
      if (!is_dump && !(h->nlmsg_flags & NLM_F_MULTI)) {
        // A plain answer is followed by an ack only if requested.
        if (!(rh->nlmsg_flags & NLM_F_ACK)) return st;
      }
    }
  }
}

}  // namespace mesh::apply
