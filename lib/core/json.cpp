#include "core/json.h"

#include <nlohmann/json.hpp>

#include "core/file.h"

namespace mesh {

static std::pair<size_t, size_t> line_col(std::string_view text, size_t byte) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}

Result<Json> parse_json(std::string_view text, std::string_view source) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    // e.byte is 1-based and points one past the offending character.
    size_t at = e.byte > 0 ? e.byte - 1 : 0;
    auto [line, col] = line_col(text, at);
    std::string what = e.what();
    // Keep nlohmann's explanation, drop its own "[json.exception...] parse error at ...:" prefix.
    auto pos = what.find(": syntax error");
    std::string detail = pos != std::string::npos ? what.substr(pos + 2) : what;
    if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) detail = "empty input, expected a JSON value";
    return data_error(std::string(source) + ":" + std::to_string(line) + ":" +
                      std::to_string(col) + ": " + detail);
  } catch (const Json::exception& e) {
    // Not a syntax error but a value nlohmann cannot hold (out_of_range 406:
    // a number such as 1E400 that overflows a double). Found by netmap_fuzz.
    std::string what = e.what();
    auto pos = what.find("] ");
    return data_error(std::string(source) + ": " +
                      (pos != std::string::npos ? what.substr(pos + 2) : what));
  }
}

Result<Json> read_json_file(const std::string& path) {
  auto text = read_file(path);
  if (!text) return text.status();
  return parse_json(*text, path == "-" ? "<stdin>" : path);
}

std::string dump_json(const Json& j, bool pretty) {
  return j.dump(pretty ? 2 : -1, ' ', false, Json::error_handler_t::replace);
}

static const char* type_name(const Json& j) {
  if (j.is_number_integer() || j.is_number_unsigned()) return "integer";
  return j.type_name();
}

struct JsonView::PathLink {
  std::shared_ptr<const PathLink> parent;  // null at the root
  Step step = Step::Root;
  std::string_view key;
  size_t index = 0;
  std::string source;     // root only
  std::string root_path;  // root only
};

namespace {

void append_key(std::string* path, std::string_view key) {
  if (!path->empty()) *path += '.';
  path->append(key);
}

void append_index(std::string* path, size_t i) {
  *path += '[';
  *path += std::to_string(i);
  *path += ']';
}

}  // namespace

JsonView::JsonView(const Json& j, std::string source, std::string path) : j_(&j) {
  auto root = std::make_shared<PathLink>();
  root->source = std::move(source);
  root->root_path = std::move(path);
  link_ = std::move(root);
}

const std::shared_ptr<const JsonView::PathLink>& JsonView::link() const {
  if (!link_) {
    auto l = std::make_shared<PathLink>();
    l->parent = parent_;
    l->step = step_;
    l->key = key_;
    l->index = index_;
    link_ = std::move(l);
  }
  return link_;
}

const std::string& JsonView::source() const {
  const PathLink* l = parent_ ? parent_.get() : link_.get();
  while (l->parent) l = l->parent.get();
  return l->source;
}

const std::string& JsonView::path() const {
  if (path_built_) return path_;
  if (step_ == Step::Root) {
    path_ = link_->root_path;
  } else {
    // Collect the chain up to the root, then spell it out from the top.
    std::vector<const PathLink*> chain;
    for (const PathLink* l = parent_.get(); l; l = l->parent.get()) chain.push_back(l);
    std::string p = chain.back()->root_path;
    for (size_t i = chain.size() - 1; i-- > 0;) {
      if (chain[i]->step == Step::Key)
        append_key(&p, chain[i]->key);
      else
        append_index(&p, chain[i]->index);
    }
    if (step_ == Step::Key)
      append_key(&p, key_);
    else
      append_index(&p, index_);
    path_ = std::move(p);
  }
  path_built_ = true;
  return path_;
}

Status JsonView::error(const std::string& message) const {
  const std::string& p = path();
  return data_error(source() + ": " + (p.empty() ? std::string("(top level)") : p) + ": " +
                    message);
}

bool JsonView::has(std::string_view key) const {
  return j_->is_object() && j_->contains(key);
}

bool JsonView::is_null() const { return j_->is_null(); }

Result<JsonView> JsonView::field(std::string_view key) const {
  if (!j_->is_object()) return error(std::string("expected object, got ") + type_name(*j_));
  auto it = j_->find(key);
  if (it == j_->end()) {
    std::string p = path();
    append_key(&p, key);
    return data_error(source() + ": " + p + ": required field is missing");
  }
  return JsonView(*it, link(), Step::Key, it.key(), 0);
}

bool JsonView::optional_field(std::string_view key, JsonView* out) const {
  if (!j_->is_object()) return false;
  auto it = j_->find(key);
  if (it == j_->end() || it->is_null()) return false;
  *out = JsonView(*it, link(), Step::Key, it.key(), 0);
  return true;
}

Result<std::vector<JsonView>> JsonView::elements() const {
  if (!j_->is_array()) return error(std::string("expected array, got ") + type_name(*j_));
  std::vector<JsonView> out;
  out.reserve(j_->size());
  const auto& self = link();
  const auto& arr = j_->get_ref<const Json::array_t&>();
  for (size_t i = 0; i < arr.size(); ++i) out.push_back(JsonView(arr[i], self, Step::Index, {}, i));
  return out;
}

Result<std::string_view> JsonView::as_string_view() const {
  if (!j_->is_string()) return error(std::string("expected string, got ") + type_name(*j_));
  return std::string_view(j_->get_ref<const std::string&>());
}

Result<std::string> JsonView::as_string() const {
  if (!j_->is_string()) return error(std::string("expected string, got ") + type_name(*j_));
  return j_->get<std::string>();
}

Result<int64_t> JsonView::as_int(int64_t min, int64_t max) const {
  if (j_->is_number_unsigned()) {
    uint64_t u = j_->get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX) || static_cast<int64_t>(u) > max)
      return error("must be at most " + std::to_string(max));
  } else if (!j_->is_number_integer()) {
    return error(std::string("expected integer, got ") + type_name(*j_));
  }
  int64_t v = j_->get<int64_t>();
  if (v < min) return error("must be at least " + std::to_string(min));
  if (v > max) return error("must be at most " + std::to_string(max));
  return v;
}

Result<uint64_t> JsonView::as_uint() const {
  if (j_->is_number_unsigned()) return j_->get<uint64_t>();
  if (j_->is_number_integer()) {
    if (j_->get<int64_t>() < 0) return error("must not be negative");
    return static_cast<uint64_t>(j_->get<int64_t>());
  }
  return error(std::string("expected integer, got ") + type_name(*j_));
}

Result<double> JsonView::as_number() const {
  if (!j_->is_number()) return error(std::string("expected number, got ") + type_name(*j_));
  return j_->get<double>();
}

Result<bool> JsonView::as_bool() const {
  if (!j_->is_boolean()) return error(std::string("expected boolean, got ") + type_name(*j_));
  return j_->get<bool>();
}

Result<std::vector<std::string>> JsonView::as_string_list() const {
  auto els = elements();
  if (!els) return els.status();
  std::vector<std::string> out;
  out.reserve(els->size());
  for (auto& e : *els) {
    auto s = e.as_string();
    if (!s) return s.status();
    out.push_back(std::move(*s));
  }
  return out;
}

Result<std::string> JsonView::get_string(std::string_view key) const {
  auto f = field(key);
  if (!f) return f.status();
  return f->as_string();
}

Result<int64_t> JsonView::get_int(std::string_view key, int64_t min, int64_t max) const {
  auto f = field(key);
  if (!f) return f.status();
  return f->as_int(min, max);
}

Status JsonView::check_keys(std::initializer_list<std::string_view> allowed) const {
  if (!j_->is_object()) return error(std::string("expected object, got ") + type_name(*j_));
  for (auto it = j_->begin(); it != j_->end(); ++it) {
    bool ok = false;
    for (auto a : allowed) ok = ok || a == it.key();
    if (!ok) {
      std::string p = path();
      append_key(&p, it.key());
      return data_error(source() + ": " + p + ": unknown field");
    }
  }
  return Status::ok();
}

}  // namespace mesh
