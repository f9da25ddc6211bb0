// Unit tests for lib/core: Status/Result, base64, keys, files, JSON, addresses.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/base64.h"
#include "core/file.h"
#include "core/json.h"
#include "core/key.h"
#include "core/net.h"
#include "core/status.h"

namespace mesh {
namespace {

std::vector<uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }

// ---- Status / Result ----

Result<int> half(int x) {
  if (x % 2) return data_error("odd");
  return x / 2;
}

Status quarter(int x, int* out) {
  MESH_ASSIGN(int h, half(x));
  MESH_ASSIGN(*out, half(h));
  return Status::ok();
}

TEST(Status, OkAndErrorsCarryCodeAndMessage) {
  EXPECT_TRUE(Status::ok().is_ok());
  Status s = no_input("x.json: missing");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), Exit::NoInput);
  EXPECT_EQ(s.with_context("map").message(), "map: x.json: missing");
  EXPECT_EQ(to_int(Exit::DataErr), 65);
  EXPECT_STREQ(exit_name(Exit::Unavailable), "unavailable");
}

TEST(Status, ResultPropagatesThroughMacros) {
  int out = 0;
  EXPECT_TRUE(quarter(8, &out).is_ok());
  EXPECT_EQ(out, 2);
  Status s = quarter(6, &out);  // 6/2 = 3 is odd
  EXPECT_EQ(s.code(), Exit::DataErr);
  EXPECT_EQ(s.message(), "odd");
  EXPECT_EQ(half(3).status().code(), Exit::DataErr);
  EXPECT_TRUE(half(4).status().is_ok());
}

TEST(Status, ErrnoMapping) {
  EXPECT_EQ(errno_status("f", ENOENT).code(), Exit::NoInput);
  EXPECT_EQ(errno_status("f", EACCES).code(), Exit::NoPerm);
  EXPECT_EQ(errno_status("f", EIO).code(), Exit::IoErr);
}

// ---- base64 ----

TEST(Base64, Rfc4648Vectors) {
  const char* plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char* enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(base64_encode(bytes(plain[i])), enc[i]);
    auto d = base64_decode(enc[i]);
    ASSERT_TRUE(d.is_ok()) << enc[i];
    EXPECT_EQ(*d, bytes(plain[i]));
  }
}

TEST(Base64, StrictDecodingRejectsBadInput) {
  for (const char* bad : {"Zg=", "Zg", "Z===", "Zm9v!", "Zh==", "Zm9=", "=Zm9", "Zm 9v"}) {
    auto d = base64_decode(bad);
    EXPECT_FALSE(d.is_ok()) << bad;
    if (!d.is_ok()) { EXPECT_EQ(d.status().code(), Exit::DataErr); }
  }
}

TEST(Base64, UrlSafeHasNoPaddingAndRoundTrips) {
  std::vector<uint8_t> all(256);
  for (int i = 0; i < 256; ++i) all[i] = static_cast<uint8_t>(i);
  for (size_t n = 0; n < 40; ++n) {
    std::vector<uint8_t> v(all.begin() + 200, all.begin() + 200 + n);
    std::string e = base64url_encode(v);
    EXPECT_EQ(e.find_first_of("+/="), std::string::npos);
    EXPECT_EQ(*base64url_decode(e), v);
  }
}

// ---- keys ----

TEST(Key, Rfc7748PublicKeyVector) {
  // RFC 7748 section 6.1: Alice's private and public key.
  std::vector<uint8_t> priv = {0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1,
                               0x72, 0x51, 0xb2, 0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0,
                               0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a};
  std::vector<uint8_t> pub = {0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d,
                              0xdc, 0xb4, 0x3e, 0xf7, 0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38,
                              0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b, 0x4e, 0x6a};
  auto k = SecretKey::from_base64(base64_encode(priv) + "\n");
  ASSERT_TRUE(k.is_ok());
  EXPECT_EQ(k->public_key().to_base64(), base64_encode(pub));
}

TEST(Key, GeneratedPrivateKeysAreClampedAndDistinct) {
  auto a = SecretKey::generate_private();
  auto b = SecretKey::generate_private();
  EXPECT_NE(a.to_base64(), b.to_base64());
  EXPECT_EQ(a.bytes()[0] & 7, 0);
  EXPECT_EQ(a.bytes()[31] & 0xC0, 0x40);
  EXPECT_EQ(a.to_base64().size(), 44u);
}

TEST(Key, SharedSecretAgrees) {
  auto a = SecretKey::generate_private();
  auto b = SecretKey::generate_private();
  auto ab = a.shared_secret(b.public_key());
  auto ba = b.shared_secret(a.public_key());
  ASSERT_TRUE(ab.is_ok() && ba.is_ok());
  EXPECT_EQ(ab->bytes(), ba->bytes());
  EXPECT_FALSE(a.shared_secret(PublicKey{}).is_ok());  // all-zero: low order
}

TEST(Key, ParsingRejectsWrongLengthGarbageAndEmpty) {
  std::string good = SecretKey::generate_private().to_base64();
  EXPECT_TRUE(PublicKey::from_base64(good).is_ok());
  EXPECT_TRUE(PublicKey::from_base64(good + "\r\n").is_ok());
  for (std::string bad : {std::string(""), std::string("\n"), good.substr(0, 43), good + "A",
                          good + "\nextra", good.substr(0, 42) + "==", std::string(44, '!'),
                          base64_encode(bytes("short"))}) {
    auto k = PublicKey::from_base64(bad);
    EXPECT_FALSE(k.is_ok()) << bad;
    if (!k.is_ok()) { EXPECT_EQ(k.status().code(), Exit::DataErr); }
  }
}

TEST(Key, TokensAreUrlSafeAndRandom) {
  std::string t = random_token(32);
  EXPECT_EQ(t.size(), 43u);
  EXPECT_EQ(t.find_first_of("+/="), std::string::npos);
  EXPECT_NE(t, random_token(32));
  EXPECT_TRUE(secure_equal("abc", "abc"));
  EXPECT_FALSE(secure_equal("abc", "abd"));
  EXPECT_FALSE(secure_equal("abc", "ab"));
}

// ---- files ----

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mesh-unit-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FileTest, AtomicWriteCreatesWithModeAndRefusesOverwrite) {
  std::string p = dir_ + "/key";
  ASSERT_TRUE(write_file_atomic(p, "one\n", 0600, Overwrite::No).is_ok());
  struct stat st{};
  ASSERT_EQ(stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  Status s = write_file_atomic(p, "two\n", 0600, Overwrite::No);
  EXPECT_EQ(s.code(), Exit::CantCreate);
  EXPECT_EQ(*read_file(p), "one\n");
  ASSERT_TRUE(write_file_atomic(p, "three\n", 0640, Overwrite::Yes).is_ok());
  EXPECT_EQ(*read_file(p), "three\n");
  ASSERT_EQ(stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  // No temporary files left behind.
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir_)) (void)e, ++n;
  EXPECT_EQ(n, 1);
}

TEST_F(FileTest, PendingFileAppearsOnlyOnCommit) {
  auto entries = [&] {
    int n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir_)) (void)e, ++n;
    return n;
  };
  std::string p = dir_ + "/memo";
  ASSERT_TRUE(write_file_atomic(p, "old\n", 0644).is_ok());
  {
    // Written, never committed: nothing in the directory changes.
    auto f = PendingFile::write(dir_, "dropped\n", 0600);
    ASSERT_TRUE(f.is_ok());
    EXPECT_EQ(entries(), 1);
    EXPECT_EQ(*read_file(p), "old\n");
  }
  EXPECT_EQ(entries(), 1);
  EXPECT_EQ(*read_file(p), "old\n");
  auto f = PendingFile::write(dir_, std::string(300000, 'm'), 0600);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(*read_file(p), "old\n");
  ASSERT_TRUE(f->commit(p).is_ok());
  EXPECT_EQ(*read_file(p), std::string(300000, 'm'));
  struct stat st{};
  ASSERT_EQ(stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(entries(), 1);  // replaced, no temporary name left
  EXPECT_EQ(PendingFile::write(dir_ + "/nope", "x", 0600).status().code(), Exit::NoInput);
}

TEST_F(FileTest, AtomicWriteIntoMissingDirectoryFails) {
  Status s = write_file_atomic(dir_ + "/nope/key", "x", 0600);
  EXPECT_EQ(s.code(), Exit::CantCreate);
}

TEST_F(FileTest, ReadFileErrors) {
  EXPECT_EQ(read_file(dir_ + "/missing").status().code(), Exit::NoInput);
  EXPECT_EQ(read_file(dir_).status().code(), Exit::NoInput);
  ASSERT_TRUE(write_file_atomic(dir_ + "/big", std::string(100, 'x'), 0600).is_ok());
  EXPECT_EQ(read_file(dir_ + "/big", 10).status().code(), Exit::DataErr);
}

TEST_F(FileTest, ReadFileSizesExactlyAndReadsUnsizedFiles) {
  // Sized from fstat: exactly max_bytes is fine, one more is not.
  std::string body(200000, 'y');
  body[123456] = 'z';
  ASSERT_TRUE(write_file_atomic(dir_ + "/f", body, 0600).is_ok());
  EXPECT_EQ(*read_file(dir_ + "/f"), body);
  EXPECT_EQ(*read_file(dir_ + "/f", body.size()), body);
  EXPECT_EQ(read_file(dir_ + "/f", body.size() - 1).status().code(), Exit::DataErr);
  ASSERT_TRUE(write_file_atomic(dir_ + "/empty", "", 0600).is_ok());
  EXPECT_EQ(*read_file(dir_ + "/empty"), "");
  // /proc files report size 0 but have content: the buffer grows.
  auto self = read_file("/proc/self/status");
  ASSERT_TRUE(self.is_ok());
  EXPECT_NE(self->find("Name:"), std::string::npos);
  EXPECT_EQ(self->find('\0'), std::string::npos);  // no slack left at the end
}

TEST_F(FileTest, PrivateKeyFileWarnsWhenReadableByOthers) {
  std::string p = dir_ + "/k";
  ASSERT_TRUE(write_file_atomic(p, SecretKey::generate_private().to_base64() + "\n", 0644).is_ok());
  std::string warning;
  ASSERT_TRUE(read_private_key_file(p, &warning).is_ok());
  EXPECT_NE(warning.find("644"), std::string::npos);
  ASSERT_TRUE(write_file_atomic(p, "garbage\n", 0600).is_ok());
  EXPECT_EQ(read_private_key_file(p).status().code(), Exit::DataErr);
}

// ---- JSON ----

TEST(Json, ParseErrorsGiveLineAndColumn) {
  auto r = parse_json("{\n  \"a\": 1,\n  \"b\": ]\n}", "map.json");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Exit::DataErr);
  EXPECT_EQ(r.status().message().rfind("map.json:3:8:", 0), 0u) << r.status().message();
  auto e = parse_json("   ", "x");
  EXPECT_NE(e.status().message().find("empty input"), std::string::npos);
  EXPECT_FALSE(parse_json("{} trailing", "x").is_ok());
  // A number too large for a double is out_of_range in nlohmann, not a parse
  // error; it must still come back as a data error (netmap_fuzz found it).
  auto big = parse_json("[1E400]", "n.json");
  ASSERT_FALSE(big.is_ok());
  EXPECT_EQ(big.status().code(), Exit::DataErr);
  EXPECT_EQ(big.status().message().rfind("n.json: ", 0), 0u) << big.status().message();
}

TEST(Json, ViewErrorsNameThePath) {
  auto j = *parse_json(R"({"peers":[{"name":"a"},{"name":5}],"n":-1})", "m.json");
  JsonView v(j, "m.json");
  auto peers = v.field("peers");
  ASSERT_TRUE(peers.is_ok());
  auto els = peers->elements();
  ASSERT_TRUE(els.is_ok());
  EXPECT_EQ(*(*els)[0].get_string("name"), "a");
  auto bad = (*els)[1].get_string("name");
  EXPECT_EQ(bad.status().message(), "m.json: peers[1].name: expected string, got integer");
  EXPECT_EQ(v.get_string("missing").status().message(),
            "m.json: missing: required field is missing");
  EXPECT_FALSE(v.get_int("n", 0).is_ok());
  EXPECT_EQ(v.check_keys({"peers"}).message(), "m.json: n: unknown field");
}

// ---- addresses ----

TEST(Net, LoopbackIsAllOf127And1Only) {
  for (const char* a : {"127.0.0.1", "127.255.0.9", "::1"})
    EXPECT_TRUE(IpAddr::parse(a)->is_loopback()) << a;
  for (const char* a : {"128.0.0.1", "203.0.113.1", "::", "::2", "::ffff:127.0.0.1", "fe80::1"})
    EXPECT_FALSE(IpAddr::parse(a)->is_loopback()) << a;
}

TEST(Net, PrefixesParseCanonicaliseAndContain) {
  auto p = Prefix::parse("100.64.3.7/10");
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->to_string(), "100.64.3.7/10");
  EXPECT_EQ(p->canonical().to_string(), "100.64.0.0/10");
  EXPECT_TRUE(p->contains(*IpAddr::parse("100.127.255.255")));
  EXPECT_FALSE(p->contains(*IpAddr::parse("100.128.0.0")));
  EXPECT_EQ(Prefix::parse("fd7a:115c::1")->to_string(), "fd7a:115c::1/128");
  EXPECT_EQ(Prefix::parse("fd7a:115c::1/48")->canonical().to_string(), "fd7a:115c::/48");
  for (const char* bad : {"100.64.0.0/33", "1.2.3/8", "::1/129", "1.2.3.4/", "1.2.3.4/x", "x/8"})
    EXPECT_FALSE(Prefix::parse(bad).is_ok()) << bad;
}

TEST(Net, SockAddrsParseAndFormat) {
  EXPECT_EQ(SockAddr::parse("203.0.113.1:3478")->to_string(), "203.0.113.1:3478");
  EXPECT_EQ(SockAddr::parse("[2001:db8::1]:51820")->to_string(), "[2001:db8::1]:51820");
  for (const char* bad : {"203.0.113.1", "203.0.113.1:70000", "2001:db8::1:80", "[::1]80",
                          "host:80", ":80", "1.2.3.4:"})
    EXPECT_FALSE(SockAddr::parse(bad).is_ok()) << bad;
  sockaddr_storage ss;
  auto a = *SockAddr::parse("[2001:db8::5]:9");
  a.to_sockaddr(&ss);
  EXPECT_EQ(SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)), a);
}

}  // namespace
}  // namespace mesh
