// Unit tests of mesh-apply's hosts file block (lib/apply/hosts.h): the
// names a map publishes, the block's text, and its place in a file that
// others edit too.
#include "apply/hosts.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "core/file.h"

namespace mesh::apply {
namespace {

Prefix pfx(const char* s) { return Prefix::parse(s).value(); }
IpAddr ip(const char* s) { return IpAddr::parse(s).value(); }

MapPeer peer(const std::string& name, std::vector<Prefix> addrs) {
  MapPeer p;
  p.name = name;
  p.public_key = SecretKey::generate_private().public_key();
  p.addresses = std::move(addrs);
  p.allowed_ips = p.addresses;
  return p;
}

NetMap sample() {
  NetMap m;
  m.dns_domain = "mesh";
  m.self.name = "me";
  m.self.public_key = SecretKey::generate_private().public_key();
  m.self.addresses = {pfx("100.64.0.1/10"), pfx("fd00:1:2::1/48")};
  m.peers = {peer("db1", {pfx("100.64.0.2/32"), pfx("fd00:1:2::2/128")}), peer("Web", {pfx("100.64.0.3/32")})};
  return m;
}

const char* kUserText =
    "127.0.0.1\tlocalhost\n"
    "# my own comment\n"
    "192.0.2.7   printer.lan printer\n"
    "\n"
    "::1 localhost ip6-localhost\n";

TEST(ApplyHosts, EntriesAreSelfThenPeersOnEveryAddress) {
  std::vector<std::string> warnings;
  auto e = hosts_entries(sample(), &warnings);
  std::vector<HostEntry> want = {{ip("100.64.0.1"), "me.mesh"},
                                 {ip("fd00:1:2::1"), "me.mesh"},
                                 {ip("100.64.0.2"), "db1.mesh"},
                                 {ip("fd00:1:2::2"), "db1.mesh"},
                                 {ip("100.64.0.3"), "web.mesh"}};  // names are case-insensitive: one spelling
  EXPECT_EQ(e, want);
  EXPECT_TRUE(warnings.empty());
}

TEST(ApplyHosts, NoDomainNoNames) {
  NetMap m = sample();
  m.dns_domain.clear();
  std::vector<std::string> warnings;
  EXPECT_TRUE(hosts_entries(m, &warnings).empty());
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(hosts_block("wg0", {}), "");
}

TEST(ApplyHosts, NamesThatAreNotLabelsOrTakenAreSkippedWithAWarning) {
  NetMap m = sample();
  m.dns_domain = "Corp.Example";
  m.peers.push_back(peer("db_2", {pfx("100.64.0.4/32")}));       // '_' (the coordinator allows it)
  m.peers.push_back(peer("a.b", {pfx("100.64.0.5/32")}));        // two labels
  m.peers.push_back(peer("", {pfx("100.64.0.6/32")}));           // no name
  m.peers.push_back(peer("DB1", {pfx("100.64.0.7/32")}));        // db1 again
  m.peers.push_back(peer("-x", {pfx("100.64.0.8/32")}));
  m.peers.push_back(peer(std::string(64, 'x'), {pfx("100.64.0.9/32")}));
  m.peers.push_back(peer("ok-2", {pfx("100.64.0.10/32")}));
  std::vector<std::string> warnings;
  auto e = hosts_entries(m, &warnings);
  ASSERT_EQ(e.size(), 6u);
  EXPECT_EQ(e[0].name, "me.corp.example");
  EXPECT_EQ(e[2].name, "db1.corp.example");
  EXPECT_EQ(e[2].addr, ip("100.64.0.2"));  // the first holder keeps it
  EXPECT_EQ(e[5], (HostEntry{ip("100.64.0.10"), "ok-2.corp.example"}));
  ASSERT_EQ(warnings.size(), 6u);
  EXPECT_NE(warnings[0].find("peer 'db_2': no DNS name: 'db_2' is not a DNS label"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("'a.b' is not a DNS label"), std::string::npos);
  EXPECT_NE(warnings[2].find("has no name"), std::string::npos);
  EXPECT_NE(warnings[3].find("db1.corp.example is already given to another peer"), std::string::npos);
}

TEST(ApplyHosts, BlockText) {
  auto block = hosts_block("wg0", hosts_entries(sample(), nullptr));
  EXPECT_EQ(block,
            "# BEGIN mesh-apply wg0 (managed by mesh-apply(8): edits here are lost)\n"
            "100.64.0.1\tme.mesh\n"
            "fd00:1:2::1\tme.mesh\n"
            "100.64.0.2\tdb1.mesh\n"
            "fd00:1:2::2\tdb1.mesh\n"
            "100.64.0.3\tweb.mesh\n"
            "# END mesh-apply wg0\n");
  EXPECT_EQ(hosts_block_names(block), 5u);
  EXPECT_EQ(hosts_block_names(""), 0u);
}

TEST(ApplyHosts, AppendReplaceRemoveKeepTheRestByteForByte) {
  std::string user = kUserText;
  auto b1 = hosts_block("wg0", hosts_entries(sample(), nullptr));
  auto added = hosts_update(user, "wg0", b1);
  ASSERT_TRUE(added) << added.status().message();
  EXPECT_EQ(*added, user + b1);
  // Idempotent: the same block again is the same text.
  EXPECT_EQ(*hosts_update(*added, "wg0", b1), *added);
  // A hand edit after the block stays where it is when the block changes.
  std::string edited = *added + "198.51.100.9 added.later\n";
  NetMap m = sample();
  m.peers.erase(m.peers.begin());  // db1 deleted
  m.peers[0].name = "web2";         // Web renamed
  auto b2 = hosts_block("wg0", hosts_entries(m, nullptr));
  auto replaced = hosts_update(edited, "wg0", b2);
  ASSERT_TRUE(replaced);
  EXPECT_EQ(*replaced, user + b2 + "198.51.100.9 added.later\n");
  EXPECT_EQ(replaced->find("db1.mesh"), std::string::npos);
  EXPECT_EQ(replaced->find("web.mesh"), std::string::npos);
  EXPECT_NE(replaced->find("100.64.0.3\tweb2.mesh\n"), std::string::npos);
  // Removal gives back exactly what the user had.
  EXPECT_EQ(*hosts_update(*replaced, "wg0", ""), user + "198.51.100.9 added.later\n");
  EXPECT_EQ(*hosts_update(user, "wg0", ""), user);  // nothing to remove
  // A file without a final newline gets one before the block.
  EXPECT_EQ(*hosts_update("127.0.0.1 localhost", "wg0", b1), "127.0.0.1 localhost\n" + b1);
  EXPECT_EQ(*hosts_update("", "wg0", b1), b1);
}

TEST(ApplyHosts, TwoInterfacesKeepTheirOwnBlocks) {
  auto a = hosts_block("wg0", hosts_entries(sample(), nullptr));
  NetMap m = sample();
  m.dns_domain = "other";
  auto b = hosts_block("wg01", hosts_entries(m, nullptr));  // "wg0" is a prefix of "wg01"
  std::string text = *hosts_update(*hosts_update(kUserText, "wg0", a), "wg01", b);
  EXPECT_EQ(text, std::string(kUserText) + a + b);
  auto span = find_hosts_block(text, "wg0");
  ASSERT_TRUE(span && *span);
  EXPECT_EQ(text.substr((*span)->begin, (*span)->end - (*span)->begin), a);
  EXPECT_EQ(*hosts_update(text, "wg0", ""), std::string(kUserText) + b);
  EXPECT_EQ(*hosts_update(text, "wg01", ""), std::string(kUserText) + a);
}

TEST(ApplyHosts, DamagedBlocksAreRefusedNotEaten) {
  auto block = hosts_block("wg0", hosts_entries(sample(), nullptr));
  std::string begin = "# BEGIN mesh-apply wg0 (managed by mesh-apply(8): edits here are lost)\n";
  std::string end = "# END mesh-apply wg0\n";
  struct Case {
    std::string text, expect;
  };
  std::vector<Case> cases = {
      // A start marker without an end: replacing "to the end" would eat the user's lines.
      {std::string(kUserText) + begin + "100.64.0.2\tdb1.mesh\n192.0.2.7 mine\n",
       "line 6: '# BEGIN mesh-apply wg0' without '# END mesh-apply wg0' after it"},
      {std::string(kUserText) + end, "line 6: '# END mesh-apply wg0' without '# BEGIN mesh-apply wg0' before it"},
      {begin + begin + end, "line 2: a second '# BEGIN mesh-apply wg0' before '# END mesh-apply wg0'"},
      {block + block, "line 8: a second block begins"},
      {end + begin, "line 1: '# END mesh-apply wg0' without"},
  };
  for (const auto& c : cases) {
    auto r = hosts_update(c.text, "wg0", block);
    ASSERT_FALSE(r) << c.text;
    EXPECT_EQ(r.status().code(), Exit::Config);
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("repair or remove it by hand"), std::string::npos);
    EXPECT_FALSE(hosts_update(c.text, "wg0", ""));  // removal refuses too
  }
  // Another interface's markers, and look-alikes, are not ours.
  std::string others = "# BEGIN mesh-apply wg01\n# END mesh-apply wg1\n#BEGIN mesh-apply wg0\n";
  EXPECT_EQ(*hosts_update(others, "wg0", block), others + block);
  // CRLF line ends (a file edited elsewhere) still match.
  std::string crlf = "127.0.0.1 localhost\r\n# BEGIN mesh-apply wg0\r\n100.64.0.9\told.mesh\r\n# END mesh-apply wg0\r\nx\r\n";
  EXPECT_EQ(*hosts_update(crlf, "wg0", block), "127.0.0.1 localhost\r\n" + block + "x\r\n");
}

class ApplyHostsFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("mesh-hosts-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "hosts").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string read() { return read_file(path_).value(); }
  mode_t mode() {
    struct stat st{};
    EXPECT_EQ(::stat(path_.c_str(), &st), 0);
    return st.st_mode & 07777;
  }
  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(ApplyHostsFile, WritesKeepsModeAndIsIdempotent) {
  ASSERT_TRUE(write_file_atomic(path_, kUserText, 0640));
  ASSERT_EQ(::chmod(path_.c_str(), 0640), 0);
  auto block = hosts_block("wg0", hosts_entries(sample(), nullptr));
  // A dry run reports the change and writes nothing.
  auto dry = sync_hosts_file(path_, "wg0", block, true, "");
  ASSERT_TRUE(dry) << dry.status().message();
  EXPECT_TRUE(dry->changed);
  EXPECT_EQ(read(), kUserText);
  auto r = sync_hosts_file(path_, "wg0", block, false, (dir_ / "state").string());
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_TRUE(r->changed);
  EXPECT_EQ(r->names, 5u);
  EXPECT_EQ(read(), std::string(kUserText) + block);
  EXPECT_EQ(mode(), 0640u);
  EXPECT_EQ(*read_hosts_block(path_, "wg0"), block);
  // The lock is no interface's IF.lock (an interface may be called "hosts").
  EXPECT_TRUE(std::filesystem::exists(dir_ / "state" / ":hosts.lock"));
  // Unchanged: not written at all (the inode would change with a rename).
  struct stat before{}, after{};
  ASSERT_EQ(::stat(path_.c_str(), &before), 0);
  r = sync_hosts_file(path_, "wg0", block, false, "");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->changed);
  ASSERT_EQ(::stat(path_.c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  // No temporary file is left behind.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
  // Removal restores the user's text exactly.
  r = sync_hosts_file(path_, "wg0", "", false, "");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->changed);
  EXPECT_EQ(read(), kUserText);
  EXPECT_EQ(mode(), 0640u);
  EXPECT_EQ(*read_hosts_block(path_, "wg0"), "");
}

TEST_F(ApplyHostsFile, MissingFileIsCreatedOnlyWithNames) {
  auto r = sync_hosts_file(path_, "wg0", "", false, "");
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_FALSE(r->changed);
  EXPECT_FALSE(std::filesystem::exists(path_));
  EXPECT_EQ(*read_hosts_block(path_, "wg0"), "");
  auto block = hosts_block("wg0", hosts_entries(sample(), nullptr));
  r = sync_hosts_file(path_, "wg0", block, false, "");
  ASSERT_TRUE(r);
  EXPECT_EQ(read(), block);
  EXPECT_EQ(mode(), 0644u);
}

TEST_F(ApplyHostsFile, FollowsASymlinkAndRefusesADamagedFile) {
  std::string target = (dir_ / "real-hosts").string();
  ASSERT_TRUE(write_file_atomic(target, kUserText, 0644));
  std::filesystem::create_symlink(target, path_);
  auto block = hosts_block("wg0", hosts_entries(sample(), nullptr));
  ASSERT_TRUE(sync_hosts_file(path_, "wg0", block, false, ""));
  EXPECT_TRUE(std::filesystem::is_symlink(path_));
  EXPECT_EQ(read_file(target).value(), std::string(kUserText) + block);
  // Cut the end marker off: the file is left alone, with a clear error.
  std::string damaged = std::string(kUserText) + block.substr(0, block.rfind("# END"));
  ASSERT_TRUE(write_file_atomic(target, damaged, 0644));
  for (const std::string& b : {block, std::string()}) {
    auto r = sync_hosts_file(path_, "wg0", b, false, "");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.status().code(), Exit::Config);
    EXPECT_EQ(r.status().message().rfind(path_ + ": line 6: ", 0), 0u) << r.status().message();
    EXPECT_EQ(read_file(target).value(), damaged);
  }
  EXPECT_FALSE(read_hosts_block(path_, "wg0"));
}

}  // namespace
}  // namespace mesh::apply
