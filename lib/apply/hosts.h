// The peers' DNS names in a hosts file (hosts(5), /etc/hosts by default):
// mesh-apply keeps one marked block per interface there, listing every
// overlay address of the map's peers (and of the node itself) as
// NAME.DOMAIN, where DOMAIN is the map's dns.domain (mesh-netmap(5)).
//
//   # BEGIN mesh-apply wg0 (managed by mesh-apply(8): edits here are lost)
//   100.64.0.2	db1.mesh
//   fd8a:48b2:fd5a::2	db1.mesh
//   # END mesh-apply wg0
//
// Only that block is ever changed; every byte outside it is kept. The block
// computation is pure (hosts_entries, hosts_update); sync_hosts_file does
// the I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/net.h"
#include "core/status.h"
#include "netmap/netmap.h"

namespace mesh::apply {

struct HostEntry {
  IpAddr addr;
  std::string name;  // NAME.DOMAIN, lower case
  bool operator==(const HostEntry&) const = default;
};

// The names `m` publishes: self first, then the peers in map order, each
// NAME.DOMAIN on each of its overlay addresses (in the map's order). None
// when the map has no dns.domain. A name that is not a DNS label (RFC 1123:
// letters, digits, '-'), an empty one, or one given before (names are
// case-insensitive) is skipped, with a line for each in `warnings`.
std::vector<HostEntry> hosts_entries(const NetMap& m, std::vector<std::string>* warnings);

// The block listing `entries` for interface `ifname`, marker lines
// included, each line ending in '\n'; "" when `entries` is empty.
std::string hosts_block(const std::string& ifname, const std::vector<HostEntry>& entries);

// Where `ifname`'s block is in `text`: [begin, end) spans its lines, from
// the start of the begin marker line to just after the end marker line's
// newline (or the end of the text). nullopt when there is none. Config
// error when the block is damaged (a begin marker without an end, an end
// without a begin, or two blocks): a file in that state is not rewritten,
// so a stray marker can never make mesh-apply eat the rest of it.
struct BlockSpan {
  size_t begin = 0, end = 0;
};
Result<std::optional<BlockSpan>> find_hosts_block(std::string_view text, const std::string& ifname);

// `text` with `ifname`'s block replaced by `block` (hosts_block()): in
// place when there is one, else appended at the end (after a newline, if
// the text does not end in one); removed when `block` is empty. Errors as
// find_hosts_block().
Result<std::string> hosts_update(std::string_view text, const std::string& ifname,
                                 const std::string& block);

struct HostsSync {
  bool changed = false;  // the file differed (and, unless dry_run, was written)
  size_t names = 0;      // lines in the block now
};

// Makes `path`'s block for `ifname` be `block`. A missing file counts as
// empty and is created (mode 0644) only when there is a block to write. The
// file is replaced atomically (a temporary file in its directory with the
// original's mode and owner, then rename(2)); a symbolic link is followed.
// When the file is a mount point (the bind-mounted /etc/hosts of a
// container or of `ip netns exec`), where rename(2) fails with EBUSY, it
// is rewritten in place instead. Nothing is written when nothing changes
// or with `dry_run`. Concurrent runs (several interfaces) are serialised by
// a lock file in `lock_dir` ("" : none).
Result<HostsSync> sync_hosts_file(const std::string& path, const std::string& ifname,
                                  const std::string& block, bool dry_run,
                                  const std::string& lock_dir);

// The number of name lines in a block (hosts_block()'s `entries`).
size_t hosts_block_names(std::string_view block);

// The current block of `ifname` in `path` ("" when there is none or the
// file is missing); errors as find_hosts_block() and read_file().
Result<std::string> read_hosts_block(const std::string& path, const std::string& ifname);

}  // namespace mesh::apply
