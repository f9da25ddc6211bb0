// Users: people who enrol nodes by logging in at the identity provider
// (mesh-coord(8), LOGIN). A user is keyed by the token's subject and holds
// what the last login said (email, name, IdP groups); a login peer is owned
// by one user and follows that user's groups. Users are stored as named
// records of kind "user" (Store::put_record). Pure logic over the model;
// the server holds the locks and persists.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "coord/model.h"
#include "coord/oidc.h"
#include "core/json.h"
#include "core/status.h"

namespace mesh::coord {

struct User {
  std::string subject, email, name;
  std::vector<std::string> groups;  // IdP groups at the last login
  bool disabled = false;
  int64_t created_at = 0, last_login = 0;
  Json to_json() const;
  static Result<User> from_json(const Json& j);
};

using Users = std::map<std::string, User>;  // by subject

// A user by subject or email (case-insensitive); nullptr when none.
User* find_user(Users& users, const std::string& ref);

// The peers a user owns (ids, ascending).
std::vector<uint32_t> user_peers(const Model& m, const std::string& subject);

// The user record after a login with `id` (created when new).
User user_after_login(const Users& users, const oidc::Identity& id, int64_t now);

// Makes every peer of `u` follow its email and groups, and sets their
// owner_disabled flag from u.disabled. Returns the map changes; `touched`
// gets the peers whose records changed.
Changes sync_user_peers(Model& m, const User& u, int64_t now, std::vector<uint32_t>* touched);

// Cuts off login peers whose login expired at `now` (login_expires_at set
// and passed). Returns the map changes; `expired` gets their ids.
Changes expire_logins(Model& m, int64_t now, std::vector<uint32_t>* expired);

// "24h", "90m", "3600s", "2d" or bare seconds; 0 means never.
Result<int64_t> parse_duration_text(const std::string& text);

}  // namespace mesh::coord
