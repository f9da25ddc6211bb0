#include "apply/process.h"

// Boost.Process offers vfork(2) (bp::posix::use_vfork) only where its
// config sees a pre-2008 POSIX, never with glibc's defaults, although the
// executor it guards is complete and Linux has vfork. Turned on here, for
// this one translation unit.
#define BOOST_POSIX_HAS_VFORK 1
#include <boost/asio/io_context.hpp>
#include <boost/process.hpp>
#include <boost/process/posix.hpp>
#include <future>

namespace mesh::apply {

namespace bp = boost::process;

Result<ProcResult> run_process(const std::vector<std::string>& argv, std::string_view input,
                               std::chrono::milliseconds timeout,
                               const std::vector<std::string>& unset_env) {
  if (argv.empty()) return internal_error("run_process: empty argv");
  try {
    boost::filesystem::path exe = argv[0].find('/') == std::string::npos
                                      ? bp::search_path(argv[0])
                                      : boost::filesystem::path(argv[0]);
    if (exe.empty()) return unavailable(argv[0] + ": not found on PATH");
    std::vector<std::string> args(argv.begin() + 1, argv.end());
    bp::environment env = boost::this_process::environment();
    for (const auto& name : unset_env) env.erase(name);
    boost::asio::io_context ios;
    std::future<std::string> out, err;
    std::string in(input);
    // vfork(2), not fork(2): the caller may be a large process (a 5,000-peer
    // apply holds some 15 MB) whose page tables fork would copy, on a core
    // the WireGuard daemon is using at that moment. The child only execs.
    bp::child c(exe, bp::args(args), env, bp::std_in < boost::asio::buffer(in), bp::std_out > out,
                bp::std_err > err, ios, bp::posix::use_vfork);
    // The pipes close when the child (and anything that inherited them)
    // exits; run the I/O until then or until the deadline.
    ios.run_for(timeout);
    if (!ios.stopped()) {
      std::error_code ec;
      c.terminate(ec);
      return temp_failure(argv[0] + ": timed out after " + std::to_string(timeout.count()) + " ms");
    }
    c.wait();
    ProcResult r;
    r.exit_code = c.exit_code();
    r.out = out.get();
    r.err = err.get();
    return r;
  } catch (const std::exception& e) {
    return unavailable(argv[0] + ": " + e.what());
  }
}

}  // namespace mesh::apply
