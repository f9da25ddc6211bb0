#include "coord/users.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

namespace mesh::coord {

static std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

Json User::to_json() const {
  return Json{{"subject", subject}, {"email", email},   {"name", name},
              {"groups", groups},   {"disabled", disabled}, {"created_at", created_at},
              {"last_login", last_login}};
}

Result<User> User::from_json(const Json& j) {
  User u;
  try {
    u.subject = j.at("subject").get<std::string>();
    u.email = j.value("email", "");
    u.name = j.value("name", "");
    u.groups = j.value("groups", std::vector<std::string>{});
    u.disabled = j.value("disabled", false);
    u.created_at = j.value("created_at", int64_t{0});
    u.last_login = j.value("last_login", int64_t{0});
  } catch (const std::exception& e) {
    return Status(Exit::Config, std::string("corrupt user record: ") + e.what());
  }
  return u;
}

User* find_user(Users& users, const std::string& ref) {
  if (auto it = users.find(ref); it != users.end()) return &it->second;
  std::string l = lower(ref);
  for (auto& [sub, u] : users)
    if (!u.email.empty() && u.email == l) return &u;
  return nullptr;
}

std::vector<uint32_t> user_peers(const Model& m, const std::string& subject) {
  std::vector<uint32_t> out;
  for (const Peer* p : m.peers())
    if (!subject.empty() && p->owner == subject) out.push_back(p->id);
  return out;
}

User user_after_login(const Users& users, const oidc::Identity& id, int64_t now) {
  User u;
  if (auto it = users.find(id.subject); it != users.end()) u = it->second;
  else u.created_at = now;
  u.subject = id.subject;
  u.email = lower(id.email);
  u.name = id.name;
  u.groups = id.groups;
  std::sort(u.groups.begin(), u.groups.end());
  u.groups.erase(std::unique(u.groups.begin(), u.groups.end()), u.groups.end());
  u.last_login = now;
  return u;
}

Changes sync_user_peers(Model& m, const User& u, int64_t now, std::vector<uint32_t>* touched) {
  Changes all;
  for (uint32_t id : user_peers(m, u.subject)) {
    const Peer* p = m.by_id(id);
    if (p->owner_email == u.email && p->idp_groups == u.groups && p->owner_disabled == u.disabled)
      continue;
    Changes ch = m.update_peer(id, true, now, [&](Peer& q) {
      q.owner_email = u.email;
      q.idp_groups = u.groups;
      q.owner_disabled = u.disabled;
    });
    touched->push_back(id);
    if (ch.serial) all.serial = ch.serial;
    all.changed.insert(all.changed.end(), ch.changed.begin(), ch.changed.end());
  }
  return all;
}

Changes expire_logins(Model& m, int64_t now, std::vector<uint32_t>* expired) {
  Changes all;
  std::vector<uint32_t> due;
  for (const Peer* p : m.peers())
    if (!p->owner.empty() && !p->login_expired && p->login_expires_at > 0 && now >= p->login_expires_at)
      due.push_back(p->id);
  for (uint32_t id : due) {
    Changes ch = m.update_peer(id, true, now, [](Peer& q) { q.login_expired = true; });
    expired->push_back(id);
    if (ch.serial) all.serial = ch.serial;
    all.changed.insert(all.changed.end(), ch.changed.begin(), ch.changed.end());
  }
  return all;
}

Result<int64_t> parse_duration_text(const std::string& text) {
  if (text.empty()) return data_error("empty duration");
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 12) return data_error("duration '" + text + "': expected N[s|m|h|d]");
  int64_t n = std::stoll(text.substr(0, i));
  std::string unit = text.substr(i);
  int64_t mult = 0;
  if (unit.empty() || unit == "s") mult = 1;
  else if (unit == "m") mult = 60;
  else if (unit == "h") mult = 3600;
  else if (unit == "d") mult = 86400;
  else return data_error("duration '" + text + "': unit must be s, m, h or d");
  return n * mult;
}

}  // namespace mesh::coord
