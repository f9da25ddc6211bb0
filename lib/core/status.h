// Errors as values. A Status is either ok or carries the exit category the
// failure maps to and a one-line message meant for a human on stderr.
// Result<T> holds a T or a failed Status. Exceptions thrown by dependencies
// are caught at the call site and turned into one of these.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

#include "core/exit.h"

namespace mesh {

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(Exit code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }

  bool is_ok() const { return code_ == Exit::Ok; }
  explicit operator bool() const { return is_ok(); }
  Exit code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "context: message" (no-op when ok).
  Status with_context(const std::string& context) const {
    if (is_ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  Exit code_ = Exit::Ok;
  std::string message_;
};

// Shorthands for the common categories.
inline Status usage_error(std::string m) { return {Exit::Usage, std::move(m)}; }
inline Status data_error(std::string m) { return {Exit::DataErr, std::move(m)}; }
inline Status no_input(std::string m) { return {Exit::NoInput, std::move(m)}; }
inline Status unavailable(std::string m) { return {Exit::Unavailable, std::move(m)}; }
inline Status io_error(std::string m) { return {Exit::IoErr, std::move(m)}; }
inline Status temp_failure(std::string m) { return {Exit::TempFail, std::move(m)}; }
inline Status no_permission(std::string m) { return {Exit::NoPerm, std::move(m)}; }
inline Status internal_error(std::string m) { return {Exit::Software, std::move(m)}; }
inline Status failure(std::string m) { return {Exit::Failure, std::move(m)}; }

// "what: strerror(errno)" with an exit category chosen from errno
// (ENOENT -> NoInput, EACCES/EPERM -> NoPerm, else IoErr).
Status errno_status(const std::string& what, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {    // NOLINT
    assert(!std::get<Status>(v_).is_ok() && "Result from ok Status");
  }

  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The failure; Status::ok() when a value is held.
  Status status() const { return is_ok() ? Status() : std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace mesh

// Propagate a failed Status / Result from the enclosing function.
#define MESH_TRY(expr)                        \
  do {                                        \
    ::mesh::Status mesh_try_s_ = (expr);      \
    if (!mesh_try_s_.is_ok()) return mesh_try_s_; \
  } while (0)

#define MESH_CONCAT_(a, b) a##b
#define MESH_CONCAT(a, b) MESH_CONCAT_(a, b)
// MESH_ASSIGN(auto x, f()) : assigns the value or returns the failure.
// Expands to several statements: brace it inside if/else.
#define MESH_ASSIGN(lhs, expr) MESH_ASSIGN_(MESH_CONCAT(mesh_r_, __LINE__), lhs, expr)
#define MESH_ASSIGN_(tmp, lhs, expr) \
  auto tmp = (expr);                 \
  if (!tmp.is_ok()) return tmp.status(); \
  lhs = std::move(tmp).value()
