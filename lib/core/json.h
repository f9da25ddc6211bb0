// JSON helpers with errors a person can act on. Parsing reports
// "SOURCE:LINE:COL: message"; field access reports the JSON path
// ("SOURCE: peers[3].public_key: expected string, got number").
// Includes only nlohmann's forward declarations: include
// <nlohmann/json.hpp> in the .cpp that needs the full type.
#pragma once

#include <cstdint>
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
class JsonView {
 public:
  JsonView(const Json& j, std::string source, std::string path = "")
      : j_(&j), source_(std::move(source)), path_(std::move(path)) {}

  const Json& json() const { return *j_; }
  const std::string& path() const { return path_; }
  bool has(std::string_view key) const;
  bool is_null() const;

  // Object member (required) and optional member (absent or null -> false).
  Result<JsonView> field(std::string_view key) const;
  bool optional_field(std::string_view key, JsonView* out) const;
  // Array element views (fails if not an array).
  Result<std::vector<JsonView>> elements() const;

  Result<std::string> as_string() const;
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

 private:
  const Json* j_;
  std::string source_;
  std::string path_;
};

}  // namespace mesh
