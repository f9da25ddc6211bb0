#include "coord/oauth.h"

#include <httplib.h>
#include <sodium.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "core/base64.h"

namespace mesh::coord::oauth {
namespace {

constexpr const char* kDeviceGrant = "urn:ietf:params:oauth:grant-type:device_code";

using Form = std::vector<std::pair<std::string, std::string>>;

// client_id always; the secret only for a confidential client.
Form with_client(Form f, const ClientAuth& c) {
  f.emplace_back("client_id", c.client_id);
  if (!c.secret.empty()) f.emplace_back("client_secret", c.secret);
  return f;
}

Status refused(const char* what, const oidc::HttpReply& r) {
  return unavailable(std::string(what) + " refused by the identity provider: " + oidc::str_field(r.body, "error") +
                     " " + oidc::str_field(r.body, "error_description"));
}

bool unreserved(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string pkce_verifier() { return random_token(32); }

std::string pkce_challenge(std::string_view verifier) {
  uint8_t h[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(h, reinterpret_cast<const uint8_t*>(verifier.data()), verifier.size());
  return base64url_encode(h);
}

std::string percent_encode(std::string_view s) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    if (unreserved(c)) {
      out += c;
      continue;
    }
    auto u = static_cast<unsigned char>(c);
    out += '%';
    out += digits[u >> 4];
    out += digits[u & 15];
  }
  return out;
}

Result<std::string> percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%') {
      int hi = i + 2 < s.size() ? hex(s[i + 1]) : -1, lo = i + 2 < s.size() ? hex(s[i + 2]) : -1;
      if (hi < 0 || lo < 0) return data_error("bad percent-escape in '" + std::string(s) + "'");
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string authorization_url(const std::string& endpoint, const AuthRequest& r) {
  std::string url = endpoint;
  url += endpoint.find('?') == std::string::npos ? '?' : '&';
  const std::pair<const char*, const std::string*> params[] = {
      {"client_id", &r.client_id}, {"redirect_uri", &r.redirect_uri}, {"scope", &r.scope},
      {"state", &r.state},         {"nonce", &r.nonce},               {"code_challenge", &r.challenge}};
  url += "response_type=code";
  for (const auto& [k, v] : params) {
    url += '&';
    url += k;
    url += '=';
    url += percent_encode(*v);
  }
  url += "&code_challenge_method=S256";
  return url;
}

Result<Redirect> parse_redirect_query(std::string_view query) {
  Redirect r;
  std::map<std::string, std::string*> fields{{"code", &r.code},
                                             {"state", &r.state},
                                             {"error", &r.error},
                                             {"error_description", &r.error_description}};
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    MESH_ASSIGN(auto key, percent_decode(part.substr(0, eq)));
    MESH_ASSIGN(auto value, percent_decode(eq == std::string_view::npos ? "" : part.substr(eq + 1)));
    auto it = fields.find(key);
    if (it == fields.end()) continue;  // e.g. "iss" (RFC 9207), session_state
    // A parameter given twice is ambiguous (RFC 6749 3.1): refuse it.
    if (!it->second->empty()) return data_error("redirect: '" + key + "' given twice");
    *it->second = std::move(value);
  }
  return r;
}

Result<std::string> check_redirect(const Redirect& r, const std::string& state) {
  // The state first: an error redirect with another state is not ours either.
  if (state.empty() || r.state != state)
    return no_permission("login refused: the redirect's state does not match this login's "
                         "(a redirect from another login, or forged)");
  if (r.error == "access_denied") return no_permission("login denied at the identity provider");
  if (!r.error.empty())
    return no_permission("login refused by the identity provider: " + r.error + " " +
                         r.error_description);
  if (r.code.empty()) return data_error("redirect: no authorization code");
  return r.code;
}

bool loopback_redirect_uri(std::string_view uri) {
  for (std::string_view host : {"http://127.0.0.1:", "http://[::1]:"}) {
    if (uri.substr(0, host.size()) != host) continue;
    std::string_view rest = uri.substr(host.size());
    size_t n = 0;
    while (n < rest.size() && n < 5 && rest[n] >= '0' && rest[n] <= '9') ++n;
    return n > 0 && n < rest.size() && rest[n] == '/';
  }
  return false;
}

Json DeviceAuth::prompt() const {
  Json p{{"verification_uri", verification_uri}, {"user_code", user_code}, {"expires_in", expires_in}};
  if (!verification_uri_complete.empty()) p["verification_uri_complete"] = verification_uri_complete;
  return p;
}

Result<DeviceAuth> start_device(const oidc::Discovery& d, const ClientAuth& c,
                                const std::string& scope, const std::string& ca_file) {
  if (d.device_authorization_endpoint.empty())
    return unavailable("the identity provider " + d.issuer +
                       " does not offer the device flow (no device_authorization_endpoint)");
  MESH_ASSIGN(auto r, oidc::http_post_form(d.device_authorization_endpoint,
                                           with_client({{"scope", scope}}, c), ca_file));
  if (r.status != 200) return refused("device authorization", r);
  DeviceAuth a;
  a.device_code = oidc::str_field(r.body, "device_code");
  a.user_code = oidc::str_field(r.body, "user_code");
  a.verification_uri = oidc::str_field(r.body, "verification_uri");
  a.verification_uri_complete = oidc::str_field(r.body, "verification_uri_complete");
  if (a.device_code.empty() || a.user_code.empty() || a.verification_uri.empty())
    return unavailable("device authorization: the identity provider's answer lacks device_code, "
                       "user_code or verification_uri");
  if (r.body.contains("interval") && r.body["interval"].is_number_integer())
    a.interval = std::clamp(r.body["interval"].get<int>(), 1, 60);
  if (r.body.contains("expires_in") && r.body["expires_in"].is_number_integer())
    a.expires_in = std::max(1, r.body["expires_in"].get<int>());
  return a;
}

Result<Poll> poll_device(const oidc::Discovery& d, const ClientAuth& c,
                         const std::string& device_code, const std::string& ca_file) {
  MESH_ASSIGN(auto t, oidc::http_post_form(
                          d.token_endpoint,
                          with_client({{"grant_type", kDeviceGrant}, {"device_code", device_code}}, c),
                          ca_file));
  Poll p;
  if (t.status == 200) {
    p.id_token = oidc::str_field(t.body, "id_token");
    if (p.id_token.empty())
      return unavailable("the identity provider issued no ID token (is 'openid' in the scope?)");
    return p;
  }
  std::string err = oidc::str_field(t.body, "error");
  if (err == "authorization_pending") return p;
  if (err == "slow_down") {
    p.slow_down = true;
    return p;
  }
  if (err == "access_denied") return no_permission("login denied at the identity provider");
  if (err == "expired_token") return temp_failure("login timed out: the code expired");
  return refused("token request", t);
}

Result<std::string> exchange_code(const oidc::Discovery& d, const ClientAuth& c,
                                  const std::string& code, const std::string& verifier,
                                  const std::string& redirect_uri, const std::string& ca_file) {
  MESH_ASSIGN(auto t, oidc::http_post_form(d.token_endpoint,
                                           with_client({{"grant_type", "authorization_code"},
                                                        {"code", code},
                                                        {"redirect_uri", redirect_uri},
                                                        {"code_verifier", verifier}},
                                                       c),
                                           ca_file));
  // invalid_grant: a used, expired or stolen code, or a wrong verifier.
  if (t.status == 400 && oidc::str_field(t.body, "error") == "invalid_grant")
    return no_permission("login refused by the identity provider: invalid_grant " +
                         oidc::str_field(t.body, "error_description"));
  if (t.status != 200) return refused("token request", t);
  std::string id = oidc::str_field(t.body, "id_token");
  if (id.empty()) return unavailable("the identity provider issued no ID token (is 'openid' in the scope?)");
  return id;
}

Status check_nonce(std::string_view id_token, const std::string& nonce) {
  MESH_ASSIGN(auto t, oidc::parse_jwt(id_token));
  if (oidc::str_field(t.payload, "nonce") != nonce)
    return no_permission("login refused: the ID token's nonce is not this login's");
  return Status::ok();
}

// ------------------------------------------------------------------ loopback receiver

struct LoopbackReceiver::Impl {
  httplib::Server server;
  std::thread thread;
  std::mutex mu;
  std::condition_variable cv;
  std::optional<std::string> query;  // the first redirect's
};

LoopbackReceiver::LoopbackReceiver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<LoopbackReceiver>> LoopbackReceiver::start() {
  auto impl = std::make_unique<Impl>();
  Impl* p = impl.get();
  p->server.Get("/callback", [p](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lk(p->mu);
    // One redirect only: a second (a reload, another tab, a guess) changes nothing.
    if (p->query) {
      res.status = 410;
      res.set_content("this login already received its answer\n", "text/plain");
      return;
    }
    auto q = req.target.find('?');
    p->query = q == std::string::npos ? "" : req.target.substr(q + 1);
    p->cv.notify_all();
    res.set_content(
        "<!DOCTYPE html><html><head><title>mesh login</title></head><body><p>mesh-coord login "
        "received the identity provider's answer; see the terminal. You may close this window.</p>"
        "</body></html>\n",
        "text/html");
  });
  p->server.set_read_timeout(5, 0);
  p->server.set_keep_alive_max_count(1);
  int port = p->server.bind_to_any_port("127.0.0.1");
  if (port <= 0) return io_error("cannot listen on 127.0.0.1 for the login's redirect");
  p->thread = std::thread([p] { p->server.listen_after_bind(); });
  // stop() is a no-op until the server runs: wait for it (bounded), so the
  // destructor's stop() cannot miss a server that starts afterwards.
  for (int i = 0; i < 2000 && !p->server.is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::unique_ptr<LoopbackReceiver> r(new LoopbackReceiver(std::move(impl)));
  r->redirect_uri_ = "http://127.0.0.1:" + std::to_string(port) + "/callback";
  return r;
}

LoopbackReceiver::~LoopbackReceiver() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<Redirect> LoopbackReceiver::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lk(impl_->mu);
  if (!impl_->cv.wait_for(lk, timeout, [&] { return impl_->query.has_value(); }))
    return temp_failure("login timed out: no redirect from the browser came back to " +
                        redirect_uri_);
  return parse_redirect_query(*impl_->query);
}

// ------------------------------------------------------------------ pending device logins

Result<std::string> PendingLogins::add(const PublicKey& node, const std::string& source,
                                       DeviceAuth auth, int64_t now) {
  MESH_TRY(room_for(node, source, now));
  std::erase_if(by_handle_, [&](const auto& e) { return e.second.node == node; });
  std::string handle = random_token(32);
  PendingLogin p;
  p.node = node;
  p.source = source;
  p.expires_at = now + std::min<int64_t>(auth.expires_in, kMaxDeviceSeconds);
  p.next_poll_at = now + auth.interval;
  p.auth = std::move(auth);
  by_handle_[handle] = std::move(p);
  return handle;
}

Status PendingLogins::room_for(const PublicKey& node, const std::string& source, int64_t now) {
  prune(now);
  size_t all = 0, from_source = 0;
  for (const auto& [h, p] : by_handle_) {
    if (p.node == node) continue;
    ++all;
    if (p.source == source) ++from_source;
  }
  if (from_source >= per_source_ || all >= total_)
    return temp_failure("too many logins in progress; try again later");
  return Status::ok();
}

PendingLogin* PendingLogins::find(const std::string& handle, const PublicKey& node, int64_t now) {
  auto it = by_handle_.find(handle);
  if (it == by_handle_.end() || it->second.node != node) return nullptr;
  if (it->second.expires_at <= now) {
    by_handle_.erase(it);
    return nullptr;
  }
  return &it->second;
}

void PendingLogins::prune(int64_t now) {
  std::erase_if(by_handle_, [&](const auto& e) { return e.second.expires_at <= now; });
}

}  // namespace mesh::coord::oauth
