// Runs a helper program (nft, wireguard-go) with Boost.Process: input on
// stdin, stdout and stderr captured, bounded by a timeout (the child is
// killed when it expires). Boost headers stay in process.cpp.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace mesh::apply {

struct ProcResult {
  int exit_code = -1;
  std::string out, err;
};

// argv[0] is looked up on PATH unless it contains a '/'. Fails with
// Unavailable when it cannot be found or started, TempFail on timeout.
// `unset_env` names variables removed from the child's environment.
Result<ProcResult> run_process(const std::vector<std::string>& argv, std::string_view input,
                               std::chrono::milliseconds timeout,
                               const std::vector<std::string>& unset_env = {});

}  // namespace mesh::apply
