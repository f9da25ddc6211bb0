// Appending addresses to a string without the temporaries of
// IpAddr/Prefix/SockAddr::to_string() (inet_ntop, sprintf and three string
// concatenations each): a 5,000-peer apply formats tens of thousands of
// them for the UAPI SET and the JSON summary. The text is exactly
// to_string()'s; IPv6 takes to_string() itself.
#pragma once

#include <string>

#include "core/net.h"

namespace mesh::apply {

inline void append_uint(std::string* out, unsigned v) {
  char buf[10];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) out->push_back(buf[--n]);
}

inline void append_ip(std::string* out, const IpAddr& a) {
  if (!a.is_v4()) {
    out->append(a.to_string());
    return;
  }
  for (int i = 0; i < 4; ++i) {
    if (i) out->push_back('.');
    append_uint(out, a.bytes[i]);
  }
}

inline void append_prefix(std::string* out, const Prefix& p) {
  append_ip(out, p.addr);
  out->push_back('/');
  append_uint(out, static_cast<unsigned>(p.len));
}

inline void append_sockaddr(std::string* out, const SockAddr& s) {
  if (!s.ip.is_v4()) out->push_back('[');
  append_ip(out, s.ip);
  if (!s.ip.is_v4()) out->push_back(']');
  out->push_back(':');
  append_uint(out, s.port);
}

}  // namespace mesh::apply
