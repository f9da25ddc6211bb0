// Exit statuses shared by every mesh program. Values follow sysexits(3) so
// shell scripts and systemd can tell "fix your input" from "try again later".
// Every man page documents this table; tests assert it.
#pragma once

namespace mesh {

enum class Exit : int {
  Ok = 0,
  Failure = 1,       // the operation ran and failed (e.g. a check that did not pass)
  Usage = 64,        // bad command line: unknown verb or flag, missing argument
  DataErr = 65,      // input data is malformed: bad base64, bad key, invalid JSON or map
  NoInput = 66,      // an input file does not exist or cannot be read
  Unavailable = 69,  // a service (coordinator, STUN/TURN server) did not answer or refused
  Software = 70,     // internal error: a bug
  CantCreate = 73,   // an output file cannot be created (exists and --force not given)
  IoErr = 74,        // an I/O error while reading or writing
  TempFail = 75,     // temporary failure: retrying later may succeed
  NoPerm = 77,       // permission denied (not root, not authorised, bad token)
  Config = 78,       // configuration or state is unusable
};

inline constexpr int to_int(Exit e) { return static_cast<int>(e); }

// Stable lower-case name of an exit status, used in --json error documents.
const char* exit_name(Exit e);

}  // namespace mesh
