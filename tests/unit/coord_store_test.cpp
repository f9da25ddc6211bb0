#include <gtest/gtest.h>

#include <filesystem>

#include "coord/store.h"

namespace mesh::coord {
namespace {

std::filesystem::path fresh_dir(const char* name) {
  // Appended piecewise: GCC 12 warns falsely (array-bounds) on
  // std::string(LITERAL) + ... here.
  std::string leaf = "mesh-store-";
  leaf += name;
  leaf += '-';
  leaf += std::to_string(::getpid());
  auto d = std::filesystem::temp_directory_path() / leaf;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

TEST(CoordStore, RecordsAreKeptPerKindAndSurviveReopening) {
  auto dir = fresh_dir("records");
  auto db = (dir / "coord.db").string();
  {
    auto st = Store::open(db);
    ASSERT_TRUE(st) << st.status().message();
    ASSERT_TRUE((*st)->begin());
    ASSERT_TRUE((*st)->put_record("user", "alice", R"({"email":"a@example.com"})"));
    ASSERT_TRUE((*st)->put_record("user", "bob", R"({"email":"b@example.com"})"));
    ASSERT_TRUE((*st)->put_record("route", "alice", R"({"network":"198.51.100.0/24"})"));
    ASSERT_TRUE((*st)->put_record("user", "alice", R"({"email":"a2@example.com"})"));
    ASSERT_TRUE((*st)->delete_record("user", "bob"));
    ASSERT_TRUE((*st)->commit());
  }
  auto st = Store::open(db);
  ASSERT_TRUE(st);
  auto users = (*st)->load_records("user");
  ASSERT_TRUE(users);
  ASSERT_EQ(users->size(), 1u);
  EXPECT_EQ((*users)[0].first, "alice");
  EXPECT_EQ((*users)[0].second["email"], "a2@example.com");
  auto routes = (*st)->load_records("route");
  ASSERT_TRUE(routes);
  ASSERT_EQ(routes->size(), 1u);
  EXPECT_EQ((*routes)[0].second["network"], "198.51.100.0/24");
  EXPECT_TRUE((*st)->load_records("nothing")->empty());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mesh::coord

namespace mesh::coord {

// Folding waits for a quiet log, but not for ever.
TEST(CoordStore, AFoldWaitsForAMinuteAndAQuietLogButNotLongerThanTenMinutes) {
  EXPECT_FALSE(fold_due(59'999, 0, 0));               // a minute has not passed
  EXPECT_TRUE(fold_due(60'000, 0, 0));                // quiet since the last fold
  EXPECT_FALSE(fold_due(60'000, 0, 56'000));          // a change 4 s ago
  EXPECT_TRUE(fold_due(61'000, 0, 56'000));           // 5 s quiet
  EXPECT_FALSE(fold_due(599'999, 0, 599'000));        // changes keep coming
  EXPECT_TRUE(fold_due(600'000, 0, 599'999));         // ten minutes: folds anyway
}

}  // namespace mesh::coord
