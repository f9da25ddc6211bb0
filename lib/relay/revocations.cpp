#include "relay/revocations.h"

#include <httplib.h>

#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>

#include "coord/revoked.h"
#include "core/file.h"
#include "core/json.h"
#include "core/key.h"
#include "turn/auth.h"

namespace mesh::relay {

struct RevocationFollower::Conn {
  explicit Conn(const std::string& url) : cli(url) {}
  httplib::Client cli;
};

RevocationFollower::RevocationFollower(std::vector<std::string> urls, std::string secret_file,
                                       turn::Shared& shared, const Log& log)
    : urls_(std::move(urls)), secret_file_(std::move(secret_file)), shared_(shared), log_(log) {}

RevocationFollower::~RevocationFollower() { stop(); }

Status RevocationFollower::start() {
  if (urls_.empty()) return usage_error("--revocations: no URL");
  for (const auto& u : urls_) {
    if (!u.starts_with("http://") && !u.starts_with("https://"))
      return usage_error("--revocations: expected http://HOST:PORT or https://HOST:PORT, not '" + u + "'");
    if (!httplib::Client(u).is_valid()) return usage_error("--revocations: invalid URL '" + u + "'");
  }
  if (secret_file_.empty())
    return usage_error("--revocations needs --auth-secret-file (the secret it shares with mesh-coord)");
  thread_ = std::thread([this] { run(); });
  return Status::ok();
}

void RevocationFollower::stop() {
  stop_ = true;
  {
    std::lock_guard lk(conn_mu_);
    if (conn_) conn_->cli.stop();
  }
  if (thread_.joinable()) thread_.join();
}

void RevocationFollower::run() {
  int64_t seq = 0;
  int backoff_ms = 500;
  size_t failures = 0;  // since the last success
  while (!stop_) {
    Status s = poll(&seq, 25);
    if (s) {
      if (failures > 0) log_.info("revocations: following " + url() + " again");
      failures = 0;
      backoff_ms = 500;
      continue;
    }
    if (stop_) break;
    if (failures++ == 0) log_.warn("revocations: " + s.message() + " (retrying)");
    if (urls_.size() > 1) {
      // Another replica at once; its sequence numbers are its own list's.
      current_ = (current_ + 1) % urls_.size();
      seq = 0;
      if (failures < urls_.size()) continue;
    }
    for (int waited = 0; waited < backoff_ms && !stop_; waited += 100)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    backoff_ms = std::min(backoff_ms * 2, 10000);
  }
}

Status RevocationFollower::poll(int64_t* seq, int wait) {
  MESH_ASSIGN(std::string text, read_file(secret_file_, 1u << 20));
  auto secrets = turn::Credentials::parse_secrets(text, secret_file_);
  wipe(text);
  if (!secrets) return secrets.status();
  auto conn = std::make_shared<Conn>(url());
  conn->cli.set_connection_timeout(5, 0);
  conn->cli.set_read_timeout(wait + 10, 0);
  {
    std::lock_guard lk(conn_mu_);
    if (stop_) return Status::ok();
    conn_ = conn;
  }
  int64_t ts = static_cast<int64_t>(::time(nullptr));
  std::string auth = std::to_string(ts) + ":" + coord::revocation_request_mac((*secrets)[0], ts, *seq, wait);
  httplib::Headers h{{coord::kRevocationAuthHeader, auth}};
  auto res = conn->cli.Get("/v1/relay/revoked?after=" + std::to_string(*seq) + "&wait=" + std::to_string(wait), h);
  {
    std::lock_guard lk(conn_mu_);
    conn_.reset();
  }
  for (auto& s : *secrets) wipe(s);
  if (!res) return unavailable("cannot reach " + url() + ": " + httplib::to_string(res.error()));
  if (res->status != 200)
    return Status(res->status == 401 ? Exit::NoPerm : Exit::Unavailable,
                  url() + " answered HTTP " + std::to_string(res->status) + ": " + res->body.substr(0, 200));
  MESH_ASSIGN(std::string again, read_file(secret_file_, 1u << 20));
  auto verify = turn::Credentials::parse_secrets(again, secret_file_);
  wipe(again);
  if (!verify) return verify.status();
  auto got = apply_revocations(shared_, *verify, ts, res->body,
                               res->get_header_value(coord::kRevocationMacHeader),
                               static_cast<int64_t>(::time(nullptr)));
  for (auto& s : *verify) wipe(s);
  if (!got) return got.status();
  if (*got != *seq) log_.info("revocations: at " + std::to_string(*got));
  *seq = *got;
  return Status::ok();
}

Result<int64_t> apply_revocations(turn::Shared& shared, const std::vector<std::string>& secrets,
                                  int64_t ts, const std::string& body, const std::string& mac,
                                  int64_t now) {
  bool ok = false;
  for (const auto& s : secrets) ok = ok || secure_equal(coord::revocation_response_mac(s, ts, body), mac);
  if (!ok) return Status(Exit::NoPerm, "the answer's MAC does not verify (another secret, or not the coordinator)");
  MESH_ASSIGN(Json j, parse_json(body, "revocations"));
  std::vector<std::pair<std::string, int64_t>> entries;
  int64_t seq = 0;
  bool full = false;
  try {
    seq = j.at("seq").get<int64_t>();
    full = j.at("full").get<bool>();
    for (const auto& e : j.at("revoked"))
      entries.emplace_back(e.at("subject").get<std::string>(), e.at("until").get<int64_t>());
  } catch (const std::exception& e) {
    return data_error(std::string("revocations: ") + e.what());
  }
  shared.revoke(entries, full, now);
  return seq;
}

}  // namespace mesh::relay
