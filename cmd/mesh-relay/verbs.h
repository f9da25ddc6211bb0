#pragma once
#include "core/cli.h"

namespace mesh::relay {
int cmd_serve(Context& ctx, int argc, char** argv);
int cmd_client(Context& ctx, int argc, char** argv);
int cmd_password(Context& ctx, int argc, char** argv);
int cmd_check(Context& ctx, int argc, char** argv);
}  // namespace mesh::relay
