#pragma once
#include "core/cli.h"

namespace mesh::keygen {
int cmd_genkey(Context& ctx, int argc, char** argv);
int cmd_pubkey(Context& ctx, int argc, char** argv);
int cmd_genpsk(Context& ctx, int argc, char** argv);
int cmd_pair(Context& ctx, int argc, char** argv);
int cmd_token(Context& ctx, int argc, char** argv);
}  // namespace mesh::keygen
