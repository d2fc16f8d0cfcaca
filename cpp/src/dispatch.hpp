#pragma once

#include "kernel_table.hpp"

namespace gradstep::detail {
// The kernels of the active ISA target.
const KernelTable& kernels();
}  // namespace gradstep::detail
