// mesh-apply's executor: reads the inputs, observes the interface, computes
// plan = diff(desired, current) and carries it out through a WgBackend,
// rtnetlink and nftables. All input is validated before anything is
// touched, so bad input leaves the interface exactly as it was.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "apply/backend.h"
#include "apply/plan.h"
#include "apply/sockbuf.h"
#include "core/json.h"
#include "core/log.h"

namespace mesh::apply {

struct ApplyOptions {
  std::string interface;
  std::string key_file;
  std::optional<uint16_t> listen_port;
  std::vector<std::string> endpoints_files;
  std::string backend = "auto";
  bool strict = false;
  bool dry_run = false;
  bool print_conf = false;
  bool verify = false;  // always read the device back (no memo snapshot)
  // Userspace daemon's UDP socket buffers (sockbuf.h); 0 leaves them alone.
  int socket_buffer = kDaemonSocketBuffer;
  std::string map_file = "-";
  // The hosts file whose block lists the map's DNS names (hosts.h); empty:
  // none is managed (--hosts-file none).
  std::string hosts_file = "/etc/hosts";
  // The exit node to send all traffic through (a peer name; empty: none),
  // whether local networks go through it too, and prefixes that keep the
  // real uplink (the coordinator; the map's TURN and STUN servers are
  // added). exitnode.h.
  std::string exit_node;
  bool exit_block_lan = false;
  std::vector<Prefix> exit_bypass;
};

// Checks a Linux interface name (1-15 bytes, no '/', ':' or whitespace).
Status check_interface_name(const std::string& name);

// True when the process may configure network interfaces (CAP_NET_ADMIN).
bool have_net_admin();

// Runs one apply; returns what goes to stdout (the JSON document, or the
// wg-quick configuration with print_conf).
Result<std::string> run_apply(const ApplyOptions& opt, const BackendEnv& env, const Log& log);

// `mesh-apply tune`: sizes the socket buffers of the daemon serving an
// existing interface, configured by mesh-apply or by other tools (wg-quick,
// wg). Returns the JSON document for stdout. Unavailable when there is no
// such interface or daemon.
Result<std::string> run_tune(const std::string& interface, const std::string& backend, int bytes,
                             const BackendEnv& env);

// `mesh-apply down`: removes the firewall table and the interface (and the
// wireguard-go daemon serving it), and the interface's block from
// `hosts_file` (none when empty); puts back the sysctls applies changed
// and removes the exit node's policy rules (routing.h, exitnode.h).
// Returns the JSON document for stdout.
Result<std::string> run_down(const std::string& interface, const std::string& backend,
                             const std::string& hosts_file, const BackendEnv& env, const Log& log);

}  // namespace mesh::apply
