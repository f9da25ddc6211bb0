#pragma once
#include "core/cli.h"

namespace mesh::coord {
int cmd_serve(Context& ctx, int argc, char** argv);
int cmd_join(Context& ctx, int argc, char** argv);
int cmd_login(Context& ctx, int argc, char** argv);
int cmd_map(Context& ctx, int argc, char** argv);
int cmd_watch(Context& ctx, int argc, char** argv);
int cmd_announce(Context& ctx, int argc, char** argv);
int cmd_punch(Context& ctx, int argc, char** argv);
int cmd_rotate_key(Context& ctx, int argc, char** argv);
int cmd_refresh(Context& ctx, int argc, char** argv);
int cmd_setup_key(Context& ctx, int argc, char** argv);
int cmd_peer(Context& ctx, int argc, char** argv);
int cmd_user(Context& ctx, int argc, char** argv);
int cmd_policy(Context& ctx, int argc, char** argv);
int cmd_route(Context& ctx, int argc, char** argv);
int cmd_events(Context& ctx, int argc, char** argv);
int cmd_migrate(Context& ctx, int argc, char** argv);
}  // namespace mesh::coord
