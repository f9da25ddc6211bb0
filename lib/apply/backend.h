// The two ways to drive a WireGuard device behind one interface.
//  - kernel: generic netlink (wgnl.h); the link is created with rtnetlink
//    as type "wireguard".
//  - userspace: wireguard-go's UAPI socket /var/run/wireguard/IF.sock
//    (uapi.h); the interface is created by starting `wireguard-go IF` (or
//    $WG_USERSPACE_IMPLEMENTATION), which daemonises once its TUN device and
//    socket are ready, so mesh-apply can exit and leave it serving.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "apply/device.h"
#include "apply/sockbuf.h"
#include "core/status.h"

namespace mesh::apply {

// One SET written while it is still being computed, so the device starts
// on the first peers while the rest are read (userspace only: the UAPI
// applies a SET line by line as it arrives). append() never waits for the
// device; finish() ends the SET and returns the device's answer.
class SetStream {
 public:
  virtual ~SetStream() = default;
  virtual void append(std::string lines) = 0;
  virtual Status finish() = 0;
};

class WgBackend {
 public:
  virtual ~WgBackend() = default;
  virtual const char* name() const = 0;
  // Whether a WireGuard device IF is served by this backend.
  virtual Result<bool> exists() = 0;
  virtual Status create() = 0;
  virtual Result<DeviceState> get() = 0;
  virtual Status set(const DeviceUpdate& u) = 0;
  // A SET to write piecemeal (SetStream), or null where there is no such
  // thing (kernel: netlink messages are whole) or no daemon to take it.
  virtual std::unique_ptr<SetStream> open_set_stream() { return nullptr; }
  // Removes the interface (and, userspace, waits for its daemon to exit).
  virtual Status destroy() = 0;
  // Userspace: raises the UDP socket buffers of the daemon serving IF to at
  // least `bytes` (sockbuf.h says why), waiting up to `wait_ms` for a link
  // that just came up to get its sockets. Kernel: nothing to do (the
  // module's sockets are the kernel's own), so none found.
  virtual Result<SocketSizing> size_sockets(int bytes, int wait_ms) {
    (void)bytes;
    (void)wait_ms;
    return SocketSizing{};
  }
};

struct BackendEnv {
  std::string uapi_dir = "/var/run/wireguard";
  std::string userspace_impl = "wireguard-go";  // $WG_USERSPACE_IMPLEMENTATION
  int start_timeout_ms = 10000;
  std::string state_dir = "/run/mesh-apply";  // memo.h; $MESH_APPLY_STATE_DIR
  // Seconds a memo snapshot may stand in for reading the device back
  // (memo.h); 0: always read it. $MESH_APPLY_VERIFY_INTERVAL.
  int64_t verify_interval = 60;
  // Unix time in seconds (injected so tests can move it).
  std::function<int64_t()> now = [] {
    return static_cast<int64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count());
  };
};

std::unique_ptr<WgBackend> make_userspace_backend(const std::string& ifname, const BackendEnv& env);
std::unique_ptr<WgBackend> make_kernel_backend(const std::string& ifname);

// True when the kernel's "wireguard" generic netlink family is present.
bool kernel_wireguard_available();

// Picks a backend: "kernel", "userspace" or "auto" (a UAPI socket for IF
// means userspace; else the kernel if its module is available; else
// userspace). Unavailable for "kernel" without the module.
Result<std::unique_ptr<WgBackend>> choose_backend(const std::string& which,
                                                  const std::string& ifname,
                                                  const BackendEnv& env);

}  // namespace mesh::apply
