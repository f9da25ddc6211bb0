#pragma once
#include "core/cli.h"

namespace mesh::punch {
int cmd_stun(Context& ctx, int argc, char** argv);
int cmd_probe(Context& ctx, int argc, char** argv);
}  // namespace mesh::punch
