#include "core/status.h"

#include <cerrno>
#include <cstring>

namespace mesh {

const char* exit_name(Exit e) {
  switch (e) {
    case Exit::Ok: return "ok";
    case Exit::Failure: return "failure";
    case Exit::Usage: return "usage";
    case Exit::DataErr: return "data";
    case Exit::NoInput: return "no-input";
    case Exit::Unavailable: return "unavailable";
    case Exit::Software: return "internal";
    case Exit::CantCreate: return "cant-create";
    case Exit::IoErr: return "io";
    case Exit::TempFail: return "temporary";
    case Exit::NoPerm: return "permission";
    case Exit::Config: return "config";
  }
  return "unknown";
}

Status errno_status(const std::string& what, int err) {
  Exit code = Exit::IoErr;
  if (err == ENOENT || err == ENOTDIR) code = Exit::NoInput;
  if (err == EACCES || err == EPERM) code = Exit::NoPerm;
  return Status(code, what + ": " + std::strerror(err));
}

}  // namespace mesh
