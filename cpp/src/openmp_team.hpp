// Borrowing the OpenMP team of a runtime already loaded in the process
// (torch's), for GRADSTEP_THREADING=openmp. The pool (threading.cpp) asks
// here first; why this exists at all is told in openmp_team.cpp.
#pragma once

#include "threading.hpp"

namespace gradstep::detail {

// Runs every block on a team of `threads` (the caller included)
// of the loaded OpenMP runtime and returns true when all are done; returns
// false at once, having run nothing, when borrowing is off (the default), no
// runtime is loaded, or this is a forked child. Not reentrant: callers take
// turns (the pool calls it under its run lock).
bool run_on_openmp_team(const Blocks& blocks, int threads, SliceFn fn, void* ctx);

}  // namespace gradstep::detail
