// JSON helpers with errors a person can act on. Parsing reports
// "SOURCE:LINE:COL: message"; field access reports the JSON path
// ("SOURCE: peers[3].public_key: expected string, got number").
// Includes only nlohmann's forward declarations: include
// <nlohmann/json.hpp> in the .cpp that needs the full type.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace mesh {

using Json = nlohmann::json;

// Parses `text` (one JSON document; trailing non-space is an error).
// `source` names the input in errors ("map.json", "<stdin>").
Result<Json> parse_json(std::string_view text, std::string_view source);

// Reads and parses a file ("-" = stdin).
Result<Json> read_json_file(const std::string& path);

// Serialises compactly (one line) or indented by 2.
std::string dump_json(const Json& j, bool pretty = false);

// A cursor into a JSON document that remembers its path for errors.
// Every getter returns DataErr "SOURCE: PATH: expected TYPE, got TYPE".
// The path is kept as a chain of (parent, key or index) links shared by
// the views of one document and only spelled out when an error (or
// path()) needs it, so walking a large document costs no string building.
// A view refers into the Json it was made from: keep that alive.
class JsonView {
 public:
  JsonView(const Json& j, std::string source, std::string path = "");

  const Json& json() const { return *j_; }
  const std::string& path() const;
  bool has(std::string_view key) const;
  bool is_null() const;

  // Object member (required) and optional member (absent or null -> false).
  Result<JsonView> field(std::string_view key) const;
  bool optional_field(std::string_view key, JsonView* out) const;
  // Array element views (fails if not an array).
  Result<std::vector<JsonView>> elements() const;

  Result<std::string> as_string() const;
  // The string without a copy; it points into the document.
  Result<std::string_view> as_string_view() const;
  Result<int64_t> as_int(int64_t min = INT64_MIN, int64_t max = INT64_MAX) const;
  Result<uint64_t> as_uint() const;
  Result<double> as_number() const;
  Result<bool> as_bool() const;
  Result<std::vector<std::string>> as_string_list() const;

  // Convenience: required typed members.
  Result<std::string> get_string(std::string_view key) const;
  Result<int64_t> get_int(std::string_view key, int64_t min = INT64_MIN,
                          int64_t max = INT64_MAX) const;

  // Strict mode: fails naming the first key of this object not in `allowed`.
  Status check_keys(std::initializer_list<std::string_view> allowed) const;

  // An error at this path: "SOURCE: PATH: message" (DataErr).
  Status error(const std::string& message) const;

  // One link of a path chain (json.cpp).
  struct PathLink;

 private:
  enum class Step : uint8_t { Root, Key, Index };
  JsonView(const Json& j, std::shared_ptr<const PathLink> parent, Step step, std::string_view key,
           size_t index)
      : j_(&j), parent_(std::move(parent)), step_(step), key_(key), index_(index) {}
  // The link naming this view, made on first use and shared by its children.
  const std::shared_ptr<const PathLink>& link() const;
  const std::string& source() const;

  const Json* j_;
  std::shared_ptr<const PathLink> parent_;  // Root: null
  Step step_ = Step::Root;
  std::string_view key_;  // Step::Key: a key stored in the document
  size_t index_ = 0;      // Step::Index
  mutable std::shared_ptr<const PathLink> link_;
  mutable std::string path_;
  mutable bool path_built_ = false;
};

}  // namespace mesh
