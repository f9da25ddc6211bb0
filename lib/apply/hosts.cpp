#include "apply/hosts.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <set>

#include "core/fd.h"
#include "core/file.h"

namespace mesh::apply {
namespace {

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::string begin_marker(const std::string& ifname) { return "# BEGIN mesh-apply " + ifname; }
std::string end_marker(const std::string& ifname) { return "# END mesh-apply " + ifname; }

// `line` (without its newline) is `marker`, alone or followed by a space
// and a comment: "wg0" must not match the block of "wg01".
bool is_marker(std::string_view line, const std::string& marker) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.substr(0, marker.size()) != marker) return false;
  return line.size() == marker.size() || line[marker.size()] == ' ' || line[marker.size()] == '\t';
}

}  // namespace

size_t hosts_block_names(std::string_view block) {
  size_t n = 0;
  for (char c : block) n += c == '\n';
  return n >= 2 ? n - 2 : 0;  // without the markers
}

std::vector<HostEntry> hosts_entries(const NetMap& m, std::vector<std::string>* warnings) {
  std::vector<HostEntry> out;
  if (m.dns_domain.empty()) return out;
  const std::string domain = lower(m.dns_domain);
  std::set<std::string> taken;
  auto add = [&](const std::string& name, const std::vector<Prefix>& addrs, const std::string& who) {
    auto warn = [&](const std::string& why) {
      if (warnings) warnings->push_back(who + ": no DNS name: " + why);
    };
    if (name.empty()) return warn("it has no name");
    if (!valid_dns_label(name))
      return warn("'" + name + "' is not a DNS label (letters, digits and '-', at most 63)");
    std::string fqdn = lower(name) + "." + domain;
    if (fqdn.size() > 253) return warn(fqdn + " is longer than 253 characters");
    if (!taken.insert(fqdn).second) return warn(fqdn + " is already given to another peer");
    for (const auto& a : addrs) out.push_back({a.addr, fqdn});
  };
  add(m.self.name, m.self.addresses, "this node");
  for (const auto& p : m.peers)
    add(p.name, p.addresses, "peer " + (p.name.empty() ? p.public_key.to_base64() : "'" + p.name + "'"));
  return out;
}

std::string hosts_block(const std::string& ifname, const std::vector<HostEntry>& entries) {
  if (entries.empty()) return "";
  std::string o = begin_marker(ifname) + " (managed by mesh-apply(8): edits here are lost)\n";
  for (const auto& e : entries) {
    o += e.addr.to_string();
    o += '\t';
    o += e.name;
    o += '\n';
  }
  o += end_marker(ifname) + "\n";
  return o;
}

Result<std::optional<BlockSpan>> find_hosts_block(std::string_view text, const std::string& ifname) {
  const std::string b = begin_marker(ifname), e = end_marker(ifname);
  std::optional<size_t> begin, begin_line;
  std::optional<BlockSpan> found;
  size_t line_no = 0;
  auto damaged = [&](size_t line, const std::string& what) {
    return Status(Exit::Config, "line " + std::to_string(line) + ": " + what + " (mesh-apply's block for " +
                                    ifname + " is damaged; repair or remove it by hand)");
  };
  for (size_t at = 0; at < text.size();) {
    size_t nl = text.find('\n', at);
    size_t next = nl == std::string_view::npos ? text.size() : nl + 1;
    std::string_view line = text.substr(at, (nl == std::string_view::npos ? text.size() : nl) - at);
    ++line_no;
    if (is_marker(line, b)) {
      if (begin) return damaged(line_no, "a second '" + b + "' before '" + e + "'");
      if (found) return damaged(line_no, "a second block begins");
      begin = at;
      begin_line = line_no;
    } else if (is_marker(line, e)) {
      if (!begin) return damaged(line_no, "'" + e + "' without '" + b + "' before it");
      found = BlockSpan{*begin, next};
      begin.reset();
    }
    at = next;
  }
  if (begin) return damaged(*begin_line, "'" + b + "' without '" + e + "' after it");
  return found;
}

Result<std::string> hosts_update(std::string_view text, const std::string& ifname,
                                 const std::string& block) {
  MESH_ASSIGN(auto span, find_hosts_block(text, ifname));
  std::string out;
  out.reserve(text.size() + block.size() + 1);
  if (span) {
    out.append(text.substr(0, span->begin));
    out.append(block);
    // A block that ended the file without a newline gets one from `block`;
    // what followed it stays as it was.
    out.append(text.substr(span->end));
    return out;
  }
  out.append(text);
  if (block.empty()) return out;
  if (!out.empty() && out.back() != '\n') out += '\n';
  out.append(block);
  return out;
}

Result<std::string> read_hosts_block(const std::string& path, const std::string& ifname) {
  auto text = read_file(path);
  if (!text) {
    if (text.status().code() == Exit::NoInput) return std::string();
    return text.status();
  }
  auto span = find_hosts_block(*text, ifname);
  if (!span) return span.status().with_context(path);
  if (!*span) return std::string();
  return text->substr((*span)->begin, (*span)->end - (*span)->begin);
}

namespace {

// Not IF.lock of any interface (memo.h, lock_interface): no interface
// name has a ':', and a run holds its interface's lock while it takes this.
UniqueFd lock_hosts(const std::string& dir) {
  if (dir.empty() || !make_dirs(dir, 0700)) return UniqueFd();
  UniqueFd fd(::open((dir + "/:hosts.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return fd;
  while (::flock(fd.get(), LOCK_EX) != 0)
    if (errno != EINTR) return UniqueFd();
  return fd;
}

// rename(2) is impossible onto a mount point: write over the file itself.
Status rewrite_in_place(const std::string& path, const std::string& data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errno_status(path, errno);
  MESH_TRY(write_all(fd.get(), data, path));
  if (::ftruncate(fd.get(), static_cast<off_t>(data.size())) != 0) return errno_status(path, errno);
  if (::fsync(fd.get()) != 0) return errno_status(path, errno);
  return Status::ok();
}

Status replace_file(const std::string& path, const std::string& data) {
  struct stat st{};
  bool existed = ::stat(path.c_str(), &st) == 0;
  mode_t mode = existed ? (st.st_mode & 07777) : 0644;
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string tmp = dir + "/." + base + ".mesh-apply.XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) {
    int err = errno;
    // A directory we may not write in, but a file we may (a bind mount).
    if (existed && (err == EACCES || err == EROFS || err == EPERM)) return rewrite_in_place(path, data);
    return errno_status("cannot create a temporary file in " + dir, err);
  }
  auto fail = [&](Status s) {
    ::unlink(tmp.c_str());
    return s;
  };
  // mkostemp makes it 0600: give it the original's mode and owner.
  if (::fchmod(fd.get(), mode) != 0) return fail(errno_status(tmp, errno));
  if (existed && (st.st_uid != ::geteuid() || st.st_gid != ::getegid()))
    (void)::fchown(fd.get(), st.st_uid, st.st_gid);  // best effort: root can, others keep theirs
  if (Status s = write_all(fd.get(), data, tmp); !s) return fail(s);
  if (::fsync(fd.get()) != 0) return fail(errno_status(tmp, errno));
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    if (existed && (err == EBUSY || err == EXDEV)) return rewrite_in_place(path, data);
    return errno_status("cannot replace " + path, err);
  }
  return fsync_dir(dir);
}

}  // namespace

Result<HostsSync> sync_hosts_file(const std::string& path, const std::string& ifname,
                                  const std::string& block, bool dry_run,
                                  const std::string& lock_dir) {
  UniqueFd lock;
  if (!dry_run) lock = lock_hosts(lock_dir);
  // Follow a symbolic link: replace the file it names, not the link.
  std::string real = path;
  if (char buf[PATH_MAX]; ::realpath(path.c_str(), buf)) real = buf;
  std::string text;
  auto r = read_file(real);
  if (r)
    text = std::move(*r);
  else if (r.status().code() != Exit::NoInput)
    return r.status();
  auto next = hosts_update(text, ifname, block);
  if (!next) return next.status().with_context(path);
  HostsSync out;
  out.names = hosts_block_names(block);
  if (*next == text) return out;
  out.changed = true;
  if (dry_run) return out;
  MESH_TRY(replace_file(real, *next));
  return out;
}

}  // namespace mesh::apply
