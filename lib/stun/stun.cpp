#include "stun/stun.h"

#include <openssl/evp.h>

#include <cstring>

#include "core/key.h"

namespace mesh::stun {
namespace {

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t rd32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
void wr16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void wr32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

constexpr uint32_t kFingerprintXor = 0x5354554e;  // RFC 8489 section 14.7

// HMAC (RFC 2104) over `msg[0, end)` with the header's length field
// replaced by `patched_len`, as MESSAGE-INTEGRITY requires (RFC 8489 section
// 14.5), without copying the message. Built on EVP_MD_CTX, which unlike the
// HMAC_CTX API is not deprecated in OpenSSL 3.
size_t hmac_patched(const EVP_MD* md, Bytes key, Bytes msg, size_t end, uint16_t patched_len,
                    uint8_t* out) {
  const size_t block = static_cast<size_t>(EVP_MD_get_block_size(md));
  uint8_t k[128] = {};
  unsigned klen = 0;
  if (key.size() > block) {
    EVP_Digest(key.data(), key.size(), k, &klen, md, nullptr);
  } else {
    std::memcpy(k, key.data(), key.size());
  }
  uint8_t pad[128];
  uint8_t inner[EVP_MAX_MD_SIZE];
  unsigned inner_len = 0, out_len = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  for (size_t i = 0; i < block; ++i) pad[i] = k[i] ^ 0x36;
  EVP_DigestInit_ex(ctx, md, nullptr);
  EVP_DigestUpdate(ctx, pad, block);
  uint8_t hdr[4] = {msg[0], msg[1], 0, 0};
  wr16(hdr + 2, patched_len);
  EVP_DigestUpdate(ctx, hdr, 4);
  EVP_DigestUpdate(ctx, msg.data() + 4, end - 4);
  EVP_DigestFinal_ex(ctx, inner, &inner_len);
  for (size_t i = 0; i < block; ++i) pad[i] = k[i] ^ 0x5c;
  EVP_DigestInit_ex(ctx, md, nullptr);
  EVP_DigestUpdate(ctx, pad, block);
  EVP_DigestUpdate(ctx, inner, inner_len);
  EVP_DigestFinal_ex(ctx, out, &out_len);
  EVP_MD_CTX_free(ctx);
  OPENSSL_cleanse(k, sizeof k);
  OPENSSL_cleanse(pad, sizeof pad);
  return out_len;
}

bool timing_safe_eq(const uint8_t* a, const uint8_t* b, size_t n) {
  uint8_t d = 0;
  for (size_t i = 0; i < n; ++i) d |= static_cast<uint8_t>(a[i] ^ b[i]);
  return d == 0;
}

}  // namespace

uint32_t crc32(Bytes data) {
  // CRC-32 (ISO 3309 / zlib polynomial), as FINGERPRINT uses.
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t b : data) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

const Attribute* MessageView::find(uint16_t t) const {
  for (size_t i = 0; i < attr_count; ++i)
    if (attrs[i].type == t) return &attrs[i];
  return nullptr;
}

bool looks_like_stun(Bytes p) {
  if (p.size() < kHeaderSize || (p[0] & 0xC0) != 0) return false;
  size_t len = rd16(p.data() + 2);
  return len % 4 == 0 && len + kHeaderSize == p.size() && rd32(p.data() + 4) == kMagicCookie;
}

Result<MessageView> parse(Bytes p) {
  if (p.size() < kHeaderSize) return data_error("STUN: message shorter than its 20-byte header");
  if ((p[0] & 0xC0) != 0) return data_error("STUN: first two bits are not zero");
  if (rd32(p.data() + 4) != kMagicCookie) return data_error("STUN: bad magic cookie");
  size_t len = rd16(p.data() + 2);
  if (len % 4 != 0) return data_error("STUN: length is not a multiple of 4");
  if (len + kHeaderSize != p.size()) return data_error("STUN: length does not match the datagram");
  MessageView m;
  m.raw = p;
  m.type = rd16(p.data());
  m.method = method_of(m.type);
  m.cls = class_of(m.type);
  std::memcpy(m.tx.data(), p.data() + 8, 12);
  size_t off = kHeaderSize;
  while (off < p.size()) {
    if (p.size() - off < 4) return data_error("STUN: truncated attribute header");
    uint16_t type = rd16(p.data() + off);
    size_t alen = rd16(p.data() + off + 2);
    size_t padded = (alen + 3) & ~size_t{3};
    if (p.size() - off - 4 < padded) return data_error("STUN: attribute overruns the message");
    if (m.fingerprint_offset) return data_error("STUN: attribute after FINGERPRINT");
    Attribute a{type, static_cast<uint16_t>(off), p.subspan(off + 4, alen)};
    bool after_integrity = m.integrity_offset || m.integrity_sha256_offset;
    if (type == kFingerprint) {
      if (alen != 4) return data_error("STUN: FINGERPRINT must be 4 bytes");
      uint32_t want = crc32(p.first(off)) ^ kFingerprintXor;
      if (rd32(a.value.data()) != want) return data_error("STUN: FINGERPRINT mismatch");
      m.fingerprint_offset = static_cast<uint16_t>(off);
    } else if (type == kMessageIntegrity) {
      if (alen != 20) return data_error("STUN: MESSAGE-INTEGRITY must be 20 bytes");
      if (after_integrity) return data_error("STUN: MESSAGE-INTEGRITY after another integrity");
      m.integrity_offset = static_cast<uint16_t>(off);
    } else if (type == kMessageIntegritySha256) {
      if (alen < 16 || alen > 32 || alen % 4)
        return data_error("STUN: MESSAGE-INTEGRITY-SHA256 must be 16-32 bytes, a multiple of 4");
      if (m.integrity_sha256_offset) return data_error("STUN: repeated MESSAGE-INTEGRITY-SHA256");
      m.integrity_sha256_offset = static_cast<uint16_t>(off);
    } else if (after_integrity) {
      off += 4 + padded;  // RFC 8489 section 14.5: ignored
      continue;
    }
    if (m.attr_count == kMaxAttributes) return data_error("STUN: too many attributes");
    m.attrs[m.attr_count++] = a;
    off += 4 + padded;
  }
  return m;
}

bool check_integrity(const MessageView& m, Bytes key) {
  if (!m.integrity_offset) return false;
  size_t off = m.integrity_offset;
  uint8_t mac[EVP_MAX_MD_SIZE];
  hmac_patched(EVP_sha1(), key, m.raw, off, static_cast<uint16_t>(off + 24 - kHeaderSize), mac);
  return timing_safe_eq(mac, m.raw.data() + off + 4, 20);
}

bool check_integrity_sha256(const MessageView& m, Bytes key) {
  if (!m.integrity_sha256_offset) return false;
  size_t off = m.integrity_sha256_offset;
  size_t vlen = rd16(m.raw.data() + off + 2);
  uint8_t mac[EVP_MAX_MD_SIZE];
  hmac_patched(EVP_sha256(), key, m.raw, off,
               static_cast<uint16_t>(off + 4 + vlen - kHeaderSize), mac);
  return timing_safe_eq(mac, m.raw.data() + off + 4, vlen);
}

std::array<uint8_t, 16> long_term_key(std::string_view user, std::string_view realm,
                                      std::string_view password) {
  std::string s;
  s.reserve(user.size() + realm.size() + password.size() + 2);
  s.append(user).append(":").append(realm).append(":").append(password);
  std::array<uint8_t, 16> out{};
  unsigned n = 0;
  EVP_Digest(s.data(), s.size(), out.data(), &n, EVP_md5(), nullptr);
  wipe(s);
  return out;
}

static Result<SockAddr> decode_addr(const Attribute& a, const TxId* tx) {
  auto v = a.value;
  if (v.size() < 4) return data_error("STUN: address attribute too short");
  uint8_t family = v[1];
  SockAddr s;
  s.port = rd16(v.data() + 2);
  if (tx) s.port ^= static_cast<uint16_t>(kMagicCookie >> 16);
  if (family == 0x01) {
    if (v.size() != 8) return data_error("STUN: IPv4 address attribute must be 8 bytes");
    s.ip.family = AF_INET;
    std::memcpy(s.ip.bytes.data(), v.data() + 4, 4);
  } else if (family == 0x02) {
    if (v.size() != 20) return data_error("STUN: IPv6 address attribute must be 20 bytes");
    s.ip.family = AF_INET6;
    std::memcpy(s.ip.bytes.data(), v.data() + 4, 16);
  } else {
    return data_error("STUN: unknown address family " + std::to_string(family));
  }
  if (tx) {
    uint8_t mask[16];
    wr32(mask, kMagicCookie);
    std::memcpy(mask + 4, tx->data(), 12);
    for (size_t i = 0; i < s.ip.size(); ++i) s.ip.bytes[i] ^= mask[i];
  }
  return s;
}

Result<SockAddr> decode_address(const Attribute& a) { return decode_addr(a, nullptr); }
Result<SockAddr> decode_xor_address(const Attribute& a, const TxId& tx) {
  return decode_addr(a, &tx);
}

Result<uint32_t> decode_u32(const Attribute& a) {
  if (a.value.size() != 4) return data_error("STUN: attribute must be 4 bytes");
  return rd32(a.value.data());
}

Result<ErrorCode> decode_error_code(const Attribute& a) {
  if (a.value.size() < 4) return data_error("STUN: ERROR-CODE too short");
  int cls = a.value[2] & 0x07, num = a.value[3];
  if (cls < 3 || cls > 6 || num > 99) return data_error("STUN: ERROR-CODE out of range");
  ErrorCode e;
  e.code = cls * 100 + num;
  e.reason = {reinterpret_cast<const char*>(a.value.data() + 4), a.value.size() - 4};
  return e;
}

Builder::Builder(std::span<uint8_t> buf, uint16_t method, uint16_t cls, const TxId& tx)
    : buf_(buf), tx_(tx) {
  if (buf.size() < kHeaderSize) {
    ok_ = false;
    return;
  }
  wr16(buf.data(), type_of(method, cls));
  wr16(buf.data() + 2, 0);
  wr32(buf.data() + 4, kMagicCookie);
  std::memcpy(buf.data() + 8, tx.data(), 12);
  len_ = kHeaderSize;
}

void Builder::set_length(size_t total) { wr16(buf_.data() + 2, static_cast<uint16_t>(total - kHeaderSize)); }

uint8_t* Builder::reserve(uint16_t type, size_t vlen) {
  size_t padded = (vlen + 3) & ~size_t{3};
  if (!ok_ || vlen > 0xFFFF || len_ + 4 + padded > buf_.size() || len_ + 4 + padded > 0xFFFF + kHeaderSize) {
    ok_ = false;
    return nullptr;
  }
  uint8_t* p = buf_.data() + len_;
  wr16(p, type);
  wr16(p + 2, static_cast<uint16_t>(vlen));
  std::memset(p + 4 + vlen, 0, padded - vlen);
  len_ += 4 + padded;
  set_length(len_);
  return p + 4;
}

Builder& Builder::add(uint16_t type, Bytes value) {
  if (uint8_t* p = reserve(type, value.size())) {
    if (!value.empty()) std::memcpy(p, value.data(), value.size());
  }
  return *this;
}

Builder& Builder::add_string(uint16_t type, std::string_view s) {
  return add(type, {reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

Builder& Builder::add_u32(uint16_t type, uint32_t v) {
  if (uint8_t* p = reserve(type, 4)) wr32(p, v);
  return *this;
}

static void write_addr(uint8_t* p, const SockAddr& a, const TxId* tx) {
  p[0] = 0;
  p[1] = a.ip.is_v4() ? 0x01 : 0x02;
  uint16_t port = a.port;
  if (tx) port ^= static_cast<uint16_t>(kMagicCookie >> 16);
  wr16(p + 2, port);
  std::memcpy(p + 4, a.ip.bytes.data(), a.ip.size());
  if (tx) {
    uint8_t mask[16];
    wr32(mask, kMagicCookie);
    std::memcpy(mask + 4, tx->data(), 12);
    for (size_t i = 0; i < a.ip.size(); ++i) p[4 + i] ^= mask[i];
  }
}

Builder& Builder::add_address(uint16_t type, const SockAddr& a) {
  if (uint8_t* p = reserve(type, 4 + a.ip.size())) write_addr(p, a, nullptr);
  return *this;
}

Builder& Builder::add_xor_address(uint16_t type, const SockAddr& a) {
  if (uint8_t* p = reserve(type, 4 + a.ip.size())) write_addr(p, a, &tx_);
  return *this;
}

Builder& Builder::add_error(int code, std::string_view reason) {
  if (uint8_t* p = reserve(kErrorCode, 4 + reason.size())) {
    p[0] = p[1] = 0;
    p[2] = static_cast<uint8_t>(code / 100);
    p[3] = static_cast<uint8_t>(code % 100);
    std::memcpy(p + 4, reason.data(), reason.size());
  }
  return *this;
}

Builder& Builder::add_integrity(Bytes key) {
  size_t off = len_;
  if (uint8_t* p = reserve(kMessageIntegrity, 20)) {
    uint8_t mac[EVP_MAX_MD_SIZE];
    hmac_patched(EVP_sha1(), key, {buf_.data(), len_}, off,
                 static_cast<uint16_t>(len_ - kHeaderSize), mac);
    std::memcpy(p, mac, 20);
  }
  return *this;
}

Builder& Builder::add_integrity_sha256(Bytes key) {
  size_t off = len_;
  if (uint8_t* p = reserve(kMessageIntegritySha256, 32)) {
    uint8_t mac[EVP_MAX_MD_SIZE];
    hmac_patched(EVP_sha256(), key, {buf_.data(), len_}, off,
                 static_cast<uint16_t>(len_ - kHeaderSize), mac);
    std::memcpy(p, mac, 32);
  }
  return *this;
}

Builder& Builder::add_fingerprint() {
  size_t off = len_;
  if (uint8_t* p = reserve(kFingerprint, 4))
    wr32(p, crc32({buf_.data(), off}) ^ kFingerprintXor);
  return *this;
}

Bytes Builder::finish() const {
  if (!ok_) return {};
  return {buf_.data(), len_};
}

TxId random_txid() {
  TxId t;
  random_bytes(t.data(), t.size());
  return t;
}

Result<ChannelData> parse_channel_data(Bytes p) {
  if (p.size() < 4) return data_error("ChannelData: shorter than its 4-byte header");
  uint16_t ch = rd16(p.data());
  if (ch < 0x4000 || ch > 0x7FFF) return data_error("ChannelData: channel number out of range");
  size_t len = rd16(p.data() + 2);
  if (len > p.size() - 4) return data_error("ChannelData: length exceeds the datagram");
  return ChannelData{ch, p.subspan(4, len)};
}

size_t channel_data_stream_size(Bytes p) {
  if (p.size() < 4) return 0;
  size_t len = rd16(p.data() + 2);
  return 4 + ((len + 3) & ~size_t{3});
}

StreamFrame next_stream_frame(Bytes p) {
  StreamFrame f;
  if (p.size() < 4) return f;
  size_t body = rd16(p.data() + 2);
  if ((p[0] & 0xC0) == 0x40) {
    f.length = 4 + body;
    f.size = 4 + ((body + 3) & ~size_t{3});
    if (p.size() >= f.size) f.kind = StreamFrame::Kind::ChannelData;
  } else if ((p[0] & 0xC0) == 0) {
    f.length = f.size = 20 + body;
    if (p.size() >= f.size) f.kind = StreamFrame::Kind::Stun;
  } else {
    f.kind = StreamFrame::Kind::Invalid;
  }
  return f;
}

}  // namespace mesh::stun
