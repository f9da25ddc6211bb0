// File helpers with errors as values.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <istream>
#include <string>
#include <string_view>

#include "core/fd.h"
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

// A file written now and put in place later, for bytes that may only
// appear under their name once other work has succeeded, while writing
// them can overlap that work. write() puts them in an unnamed file in `dir`
// (O_TMPFILE: the kernel discards it when the process ends first, so a
// crash leaves nothing behind); commit() gives it its name, atomically
// replacing whatever was there, as write_file_atomic() does but without
// its directory fsync: the rename is atomic, not durable, which suits the
// caches under /run it serves (on ext4 that fsync is a journal commit, a
// millisecond at the end of every run). Dropping a
// PendingFile without commit() leaves `dir` as it was. Where the
// filesystem has no O_TMPFILE, the bytes are kept and commit() writes them
// with write_file_atomic().
class PendingFile {
 public:
  static Result<PendingFile> write(const std::string& dir, std::string data, mode_t mode);
  // `path` must be in write()'s `dir`.
  Status commit(const std::string& path);

 private:
  PendingFile() = default;
  UniqueFd fd_;
  std::string data_;  // no O_TMPFILE: the bytes themselves
  mode_t mode_ = 0600;
};

// Writes all of `data` to `fd`, retrying on EINTR and short writes. Data
// of at most PIPE_BUF bytes goes out in a single write(2), which a pipe or
// FIFO keeps whole (POSIX): lines written this way by several processes
// sharing one pipe never interleave. `what` names the fd in errors.
Status write_all(int fd, std::string_view data, const std::string& what);

// Flushes a directory's entries (after a rename or link into it) to disk.
Status fsync_dir(const std::string& dir);

// True when `fd` refers to a regular file that group or others can read.
bool fd_is_world_readable_file(int fd);

// Creates a directory (and parents) with the given mode if missing.
Status make_dirs(const std::string& path, mode_t mode);

}  // namespace mesh
