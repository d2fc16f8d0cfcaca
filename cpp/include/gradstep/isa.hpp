// Instruction-set targets the kernels are compiled for, and which one runs.
#pragma once

#include <string>
#include <vector>

namespace gradstep {

// Every target computes bit-identical results; they differ only in speed.
enum class Isa { scalar, avx2, avx512 };

const char* isa_name(Isa);
// Targets compiled into this build that the running CPU supports, slowest first.
std::vector<Isa> available_isas();
// The target in use: the best available, unless GRADSTEP_ISA or set_isa chose one.
Isa active_isa();
// Force a target; throws std::invalid_argument if it is unknown or unsupported here.
void set_isa(const std::string& name);

// Worker threads used for large steps (1 = run on the calling thread).
void set_num_threads(int n);
int num_threads();

}  // namespace gradstep
