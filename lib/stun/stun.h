// STUN message codec (RFC 8489), with the RFC 5780 (NAT behaviour
// discovery) and RFC 8656 (TURN) attributes, and TURN ChannelData framing.
// Pure functions over byte spans: parsing never allocates (a MessageView
// points into the caller's buffer) and building writes into a caller-owned
// buffer, so the relay's packet path can use it per packet.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/net.h"
#include "core/status.h"

namespace mesh::stun {

inline constexpr uint32_t kMagicCookie = 0x2112A442;
inline constexpr size_t kHeaderSize = 20;
inline constexpr size_t kMaxAttributes = 48;

using TxId = std::array<uint8_t, 12>;
using Bytes = std::span<const uint8_t>;

enum Method : uint16_t {
  kBinding = 0x001,
  kAllocate = 0x003,  // RFC 8656
  kRefresh = 0x004,
  kSend = 0x006,
  kData = 0x007,
  kCreatePermission = 0x008,
  kChannelBind = 0x009,
};

enum Class : uint16_t { kRequest = 0, kIndication = 1, kSuccess = 2, kError = 3 };

enum Attr : uint16_t {
  kMappedAddress = 0x0001,
  kChangeRequest = 0x0003,  // RFC 5780
  kUsername = 0x0006,
  kMessageIntegrity = 0x0008,
  kErrorCode = 0x0009,
  kUnknownAttributes = 0x000A,
  kChannelNumber = 0x000C,  // RFC 8656
  kLifetime = 0x000D,
  kXorPeerAddress = 0x0012,
  kData_ = 0x0013,
  kRealm = 0x0014,
  kNonce = 0x0015,
  kXorRelayedAddress = 0x0016,
  kRequestedAddressFamily = 0x0017,
  kEvenPort = 0x0018,
  kRequestedTransport = 0x0019,
  kDontFragment = 0x001A,
  kMessageIntegritySha256 = 0x001C,
  kPasswordAlgorithm = 0x001D,
  kUserhash = 0x001E,
  kXorMappedAddress = 0x0020,
  kReservationToken = 0x0022,
  kPriority = 0x0024,  // RFC 8445
  kUseCandidate = 0x0025,
  kPadding = 0x0026,       // RFC 5780
  kResponsePort = 0x0027,  // RFC 5780
  kAdditionalAddressFamily = 0x8000,
  kAddressErrorCode = 0x8001,
  kPasswordAlgorithms = 0x8002,
  kAlternateDomain = 0x8003,
  kIcmp = 0x8004,
  kSoftware = 0x8022,
  kAlternateServer = 0x8023,
  kFingerprint = 0x8028,
  kIceControlled = 0x8029,
  kIceControlling = 0x802A,
  kResponseOrigin = 0x802B,  // RFC 5780
  kOtherAddress = 0x802C,    // RFC 5780
};

// CHANGE-REQUEST flags (RFC 5780 section 7.2).
inline constexpr uint32_t kChangeIp = 0x04;
inline constexpr uint32_t kChangePort = 0x02;

inline constexpr uint16_t type_of(uint16_t method, uint16_t cls) {
  // RFC 8489 section 5: M11..M7 C1 M6..M4 C0 M3..M0.
  return static_cast<uint16_t>((method & 0x000F) | ((method & 0x0070) << 1) |
                               ((method & 0x0F80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7));
}
inline constexpr uint16_t method_of(uint16_t type) {
  return static_cast<uint16_t>((type & 0x000F) | ((type & 0x00E0) >> 1) | ((type & 0x3E00) >> 2));
}
inline constexpr uint16_t class_of(uint16_t type) {
  return static_cast<uint16_t>(((type >> 4) & 1) | ((type >> 7) & 2));
}

struct Attribute {
  uint16_t type = 0;
  uint16_t offset = 0;  // of the attribute header within the message
  Bytes value;
};

// A parsed message: views into the buffer passed to parse().
struct MessageView {
  uint16_t type = 0;
  uint16_t method = 0;
  uint16_t cls = 0;
  TxId tx{};
  Bytes raw;  // the whole message (header + attributes)
  std::array<Attribute, kMaxAttributes> attrs{};
  size_t attr_count = 0;
  // Offsets (0 = absent) of the integrity and fingerprint attributes.
  uint16_t integrity_offset = 0;
  uint16_t integrity_sha256_offset = 0;
  uint16_t fingerprint_offset = 0;

  std::span<const Attribute> attributes() const { return {attrs.data(), attr_count}; }
  // First attribute of `type`, or nullptr. Per RFC 8489 section 14.5,
  // attributes after MESSAGE-INTEGRITY(-SHA256) other than those two and
  // FINGERPRINT are ignored by parse() and never returned.
  const Attribute* find(uint16_t type) const;
};

// Cheap test: could this datagram be a STUN message? (top two bits zero,
// magic cookie, length consistent and a multiple of 4.)
bool looks_like_stun(Bytes pkt);

// Parses and validates framing: header, length, attribute TLVs, padding,
// FINGERPRINT last. Does not check MESSAGE-INTEGRITY (needs a key) but does
// verify FINGERPRINT when present (DataErr on mismatch).
Result<MessageView> parse(Bytes pkt);

// MESSAGE-INTEGRITY (HMAC-SHA1) and MESSAGE-INTEGRITY-SHA256 checks over the
// message with its length field adjusted as RFC 8489 section 14.5 requires.
bool check_integrity(const MessageView& m, Bytes key);
bool check_integrity_sha256(const MessageView& m, Bytes key);

// Long-term credential key (RFC 8489 section 9.2.2, MD5 algorithm):
// MD5(username ":" realm ":" password). SASLprep is not applied (ASCII).
std::array<uint8_t, 16> long_term_key(std::string_view username, std::string_view realm,
                                      std::string_view password);

// Attribute value decoders.
Result<SockAddr> decode_address(const Attribute& a);  // MAPPED-, OTHER-, RESPONSE-ORIGIN, ALTERNATE-SERVER
Result<SockAddr> decode_xor_address(const Attribute& a, const TxId& tx);  // XOR-*-ADDRESS
Result<uint32_t> decode_u32(const Attribute& a);
struct ErrorCode {
  int code = 0;
  std::string_view reason;
};
Result<ErrorCode> decode_error_code(const Attribute& a);
inline std::string_view as_string(const Attribute& a) {
  return {reinterpret_cast<const char*>(a.value.data()), a.value.size()};
}

// Builds a message into a caller-owned buffer. Any overflow makes ok()
// false and finish() return an empty span; nothing is written past `buf`.
class Builder {
 public:
  Builder(std::span<uint8_t> buf, uint16_t method, uint16_t cls, const TxId& tx);

  Builder& add(uint16_t type, Bytes value);
  Builder& add_string(uint16_t type, std::string_view s);
  Builder& add_u32(uint16_t type, uint32_t v);
  Builder& add_address(uint16_t type, const SockAddr& a);
  Builder& add_xor_address(uint16_t type, const SockAddr& a);
  Builder& add_error(int code, std::string_view reason);
  // These three must come last, in this order (RFC 8489 section 14).
  Builder& add_integrity(Bytes key);
  Builder& add_integrity_sha256(Bytes key);
  Builder& add_fingerprint();

  bool ok() const { return ok_; }
  size_t size() const { return len_; }
  Bytes finish() const;

 private:
  uint8_t* reserve(uint16_t type, size_t value_len);
  void set_length(size_t body_len);

  std::span<uint8_t> buf_;
  size_t len_ = 0;
  TxId tx_;
  bool ok_ = true;
};

// A fresh random transaction id.
TxId random_txid();

uint32_t crc32(Bytes data);

// TURN ChannelData (RFC 8656 section 12.4): 2-byte channel number
// (0x4000-0x4FFF valid; 0x4000-0x7FFF is the ChannelData range), 2-byte
// length, data, padded to 4 over TCP.
struct ChannelData {
  uint16_t channel = 0;
  Bytes data;
};
inline bool looks_like_channel_data(Bytes pkt) {
  return pkt.size() >= 4 && (pkt[0] & 0xC0) == 0x40;
}
// `stream` (TCP/TLS) allows and skips the 4-byte padding; UDP requires
// length <= datagram size - 4.
Result<ChannelData> parse_channel_data(Bytes pkt);
// Total size a ChannelData frame occupies on a stream transport (with padding).
size_t channel_data_stream_size(Bytes pkt);
// The frame at the start of `buf`, a TURN stream over TCP or TLS (RFC 8656
// section 12.5: STUN messages and ChannelData back to back, ChannelData
// padded to 4 bytes). Incomplete: read more (fewer than 4 bytes, or fewer
// than the frame); Invalid: the first two bits are neither STUN (00) nor
// ChannelData (01), so the stream is not TURN. `size` is what the frame
// occupies in the stream (padding included), `length` the message itself
// (STUN header and attributes, or the ChannelData header and data).
struct StreamFrame {
  enum class Kind { Incomplete, Stun, ChannelData, Invalid } kind = Kind::Incomplete;
  size_t size = 0;
  size_t length = 0;
};
StreamFrame next_stream_frame(Bytes buf);
// Writes a 4-byte ChannelData header in front of `len` bytes of payload.
inline void write_channel_data_header(uint8_t* out, uint16_t channel, uint16_t len) {
  out[0] = static_cast<uint8_t>(channel >> 8);
  out[1] = static_cast<uint8_t>(channel);
  out[2] = static_cast<uint8_t>(len >> 8);
  out[3] = static_cast<uint8_t>(len);
}

}  // namespace mesh::stun
