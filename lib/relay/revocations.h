// mesh-relay serve --revocations URL: follows a coordinator's list of
// revoked relay credentials (GET /v1/relay/revoked, man/mesh-coord.8) and
// hands it to turn::Shared, which refuses those credentials (401) and whose
// workers end their allocations within a second.
//
// One thread long-polls the coordinator (wait 25 s), signing each request
// and checking each answer with the REST secret of --auth-secret-file (the
// first line signs, any line verifies). Errors are logged and retried with
// backoff; what was already revoked stays revoked meanwhile. With several
// URLs (coordinator replicas) a failed poll moves to the next one, which is
// asked for its whole list (after=0), since sequence numbers are per list.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/status.h"
#include "turn/server.h"

namespace mesh::relay {

class RevocationFollower {
 public:
  // `urls`: http(s)://HOST:PORT of the coordinator (one or more replicas,
  // tried in order); `secret_file`: the REST secrets (re-read at every poll,
  // so a rotation needs no restart).
  RevocationFollower(std::vector<std::string> urls, std::string secret_file, turn::Shared& shared,
                     const Log& log);
  ~RevocationFollower();
  RevocationFollower(const RevocationFollower&) = delete;
  RevocationFollower& operator=(const RevocationFollower&) = delete;

  // Checks the URLs; starts the thread.
  Status start();
  // Stops and joins (also on destruction); interrupts a poll in flight.
  void stop();

  // One poll of the current URL: after=*seq, waiting up to `wait` s; on
  // success applies the answer and moves *seq.
  Status poll(int64_t* seq, int wait);

 private:
  void run();

  const std::string& url() const { return urls_[current_]; }

  std::vector<std::string> urls_;
  size_t current_ = 0;  // only the follower thread moves it
  std::string secret_file_;
  turn::Shared& shared_;
  const Log& log_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  struct Conn;
  std::shared_ptr<Conn> conn_;  // the poll in flight, for stop()
  std::mutex conn_mu_;
};

// Applies a /v1/relay/revoked answer `body`, signed `mac` for a request made
// at `ts`, to `shared`: checks the MAC with every secret, parses, revokes.
// Returns the answer's seq. Unauthenticated (NoPerm) or DataErr on failure.
Result<int64_t> apply_revocations(turn::Shared& shared, const std::vector<std::string>& secrets,
                                  int64_t ts, const std::string& body, const std::string& mac,
                                  int64_t now);

}  // namespace mesh::relay
