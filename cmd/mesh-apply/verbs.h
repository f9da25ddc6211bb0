#pragma once
#include "apply/backend.h"
#include "core/cli.h"

namespace mesh::apply {
int cmd_apply(Context& ctx, int argc, char** argv);
int cmd_down(Context& ctx, int argc, char** argv);
int cmd_routes(Context& ctx, int argc, char** argv);
int cmd_tune(Context& ctx, int argc, char** argv);
// The backend environment from the process environment.
BackendEnv backend_env(const Context& ctx);
}  // namespace mesh::apply
