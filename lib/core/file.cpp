#include "core/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iostream>
#include <iterator>
#include <vector>

#include "core/fd.h"
#include "core/key.h"

namespace mesh {

Result<std::string> read_stream(std::istream& in, size_t max_bytes) {
  std::string out;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    out.append(buf, static_cast<size_t>(in.gcount()));
    if (out.size() > max_bytes)
      return data_error("input larger than " + std::to_string(max_bytes) + " bytes");
  }
  if (in.bad()) return io_error("read error on input");
  return out;
}

Result<std::string> read_file(const std::string& path, size_t max_bytes) {
  if (path == "-") return read_stream(std::cin, max_bytes);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_status(path, errno);
  struct stat st{};
  if (::fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode))
    return no_input(path + ": is a directory");
  // Straight into the string, sized from fstat (a regular file's size is
  // known; pipes and /proc files say 0 and grow it): no copy through a
  // buffer, no reallocation. Wiped on the way out when too large (it may
  // hold a key).
  std::string out;
  size_t used = 0;
  size_t hint = st.st_size > 0 ? static_cast<size_t>(st.st_size) : 0;
  out.resize(std::min(hint, max_bytes) + 1);  // +1: EOF is seen without a regrow
  for (;;) {
    if (used == out.size()) out.resize(std::min(out.size() * 2 + 65536, max_bytes + 1));
    ssize_t n = ::read(fd.get(), out.data() + used, out.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      wipe(out);
      return errno_status(path, errno);
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
    if (used > max_bytes) {
      wipe(out);
      return data_error(path + ": larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
  out.resize(used);
  return out;
}

static std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status write_all(int fd, std::string_view data, const std::string& what) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status(what, errno);
    }
    off += static_cast<size_t>(n);
  }
  return Status::ok();
}

Status fsync_dir(const std::string& dir) {
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd) return errno_status(dir, errno);
  if (::fsync(dfd.get()) != 0) return errno_status(dir, errno);
  return Status::ok();
}

Status write_file_atomic(const std::string& path, std::string_view data, mode_t mode,
                         Overwrite overwrite) {
  if (path.empty()) return usage_error("empty output path");
  std::string dir = dir_of(path);
  std::string tmpl = path + ".tmp.XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  UniqueFd fd(::mkostemp(name.data(), O_CLOEXEC));
  if (!fd) {
    int e = errno;
    if (e == ENOENT) return Status(Exit::CantCreate, dir + ": no such directory");
    return errno_status(path, e);
  }
  std::string tmp(name.data());
  auto fail = [&](Status s) {
    ::unlink(tmp.c_str());
    return s;
  };
  if (::fchmod(fd.get(), mode) != 0) return fail(errno_status(tmp, errno));
  if (Status w = write_all(fd.get(), data, tmp); !w) return fail(w);
  if (::fsync(fd.get()) != 0) return fail(errno_status(tmp, errno));
  fd.reset();
  if (overwrite == Overwrite::Yes) {
    if (::rename(tmp.c_str(), path.c_str()) != 0) return fail(errno_status(path, errno));
  } else {
    // link(2) fails with EEXIST instead of replacing: no check-then-act race.
    if (::link(tmp.c_str(), path.c_str()) != 0) {
      int e = errno;
      if (e == EEXIST)
        return fail(Status(Exit::CantCreate, path + ": file exists (use --force to replace it)"));
      return fail(errno_status(path, e));
    }
    ::unlink(tmp.c_str());
  }
  return fsync_dir(dir);
}

Result<PendingFile> PendingFile::write(const std::string& dir, std::string data, mode_t mode) {
  PendingFile f;
  f.mode_ = mode;
  UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, mode));
  if (!fd) {
    int e = errno;
    // open(2): EISDIR or EOPNOTSUPP where the kernel or filesystem has no
    // O_TMPFILE.
    if (e != EISDIR && e != EOPNOTSUPP) return errno_status(dir, e);
    f.data_ = std::move(data);
    return f;
  }
  if (::fchmod(fd.get(), mode) != 0) return errno_status(dir, errno);
  MESH_TRY(write_all(fd.get(), data, dir));
  if (::fsync(fd.get()) != 0) return errno_status(dir, errno);
  f.fd_ = std::move(fd);
  return f;
}

Status PendingFile::commit(const std::string& path) {
  if (!fd_) return write_file_atomic(path, data_, mode_);
  // linkat(2) cannot replace a name: link under a name of this process's
  // own, then rename over. The /proc form needs no CAP_DAC_READ_SEARCH
  // (AT_EMPTY_PATH does).
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());  // a leftover of a dead process with this pid
  std::string self = "/proc/self/fd/" + std::to_string(fd_.get());
  if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) != 0 &&
      ::linkat(fd_.get(), "", AT_FDCWD, tmp.c_str(), AT_EMPTY_PATH) != 0)
    return errno_status(path, errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return errno_status(path, e);
  }
  fd_.reset();
  // The rename is durable only once the directory entry is on disk: without
  // this a crash can bring back the previous memo after we acted on the new.
  return fsync_dir(dir_of(path));
}

bool fd_is_world_readable_file(int fd) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) return false;
  return S_ISREG(st.st_mode) && (st.st_mode & 044) != 0;
}

Status make_dirs(const std::string& path, mode_t mode) {
  if (path.empty()) return usage_error("empty directory path");
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) return errno_status(cur, errno);
  }
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status(Exit::CantCreate, path + ": not a directory");
  return Status::ok();
}

}  // namespace mesh
