// The C++ tests' tiny harness: counted checks and a thrown-message matcher.
#pragma once

#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace gradstep_test {

inline int passed = 0, failed = 0;

inline void check(bool ok, const char* what) {
  if (ok) {
    ++passed;
  } else {
    ++failed;
    std::printf("FAILED: %s\n", what);
  }
}

template <class F>
bool throws_invalid(F&& f, const char* needle) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return std::strstr(e.what(), needle) != nullptr;
  }
  return false;
}

// tests/cpp/test_threads.cpp: steps on the thread pool against one thread.
void run_thread_tests();
// tests/cpp/test_plan.cpp: a set's blocks follow the thread count (white box).
void run_plan_tests();
// tests/cpp/test_half.cpp: bf16/f16 params, grads, states and masters against float32 runs.
void run_half_tests();

}  // namespace gradstep_test
