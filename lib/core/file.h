// File helpers with errors as values.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <istream>
#include <string>
#include <string_view>

#include "core/status.h"

namespace mesh {

// Reads a whole file ("-" means stdin). Fails with NoInput when missing,
// NoPerm when unreadable, DataErr when larger than max_bytes.
Result<std::string> read_file(const std::string& path, size_t max_bytes = 64u << 20);

// Reads a whole stream up to max_bytes (DataErr beyond).
Result<std::string> read_stream(std::istream& in, size_t max_bytes = 64u << 20);

enum class Overwrite { No, Yes };

// Writes `data` to `path` atomically: a temporary file in the same directory
// created with `mode`, written, fsync'd, then renamed over (Overwrite::Yes)
// or linked into place only if `path` does not exist (Overwrite::No ->
// CantCreate when it does). The directory is fsync'd so the rename survives
// a crash. On any failure nothing is left behind and `path` is untouched.
Status write_file_atomic(const std::string& path, std::string_view data, mode_t mode,
                         Overwrite overwrite = Overwrite::Yes);

// True when `fd` refers to a regular file that group or others can read.
bool fd_is_world_readable_file(int fd);

// Creates a directory (and parents) with the given mode if missing.
Status make_dirs(const std::string& path, mode_t mode);

}  // namespace mesh
