// Umbrella header for the gradstep C++ core.
#pragma once

#include "gradstep/isa.hpp"
#include "gradstep/optim.hpp"
#include "gradstep/schedule.hpp"
