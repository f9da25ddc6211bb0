#include "core/cli11.h"
#include "verbs.h"

namespace mesh::relay {
int cmd_client(Context& ctx, int, char**) { return report(ctx, internal_error("not yet")); }
}  // namespace mesh::relay
