// Threaded steps, checked bit for bit against the same steps on one thread:
// every optimizer (both dtypes, its option variants) and the grad-stats pass
// on pools of 2-4 threads, over tensor lists above every parallel threshold
// of cpp/src/optim.cpp; two tensor sets stepped at once from two threads
// (each set used by one thread), also while a third changes the thread
// count; the thread count changed between steps, which joins the pool's
// workers and starts new ones (the API has no other way to create or destroy
// the pool: it is created on the first parallel step and never destroyed).
// The last test leaves a pool of four threads behind (test_plan.cpp, run
// next, leaves a larger one), so main() returns, and the process exits,
// with its workers alive. .ci/tsan runs this under
// ThreadSanitizer; nothing here depends on timing.
#include <gradstep/gradstep.hpp>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <dirent.h>
#endif

#include "check.hpp"

namespace gradstep_test {
namespace {

using gradstep::StepControl;
using gradstep::StepReport;
using gradstep::TensorView;

// Small tensors (several share a block), a large one (many blocks), an empty
// one and odd tails: 95K elements, over every optimizer's threshold (the
// largest is 1 << 15), so these steps are shared with the pool.
const std::vector<std::size_t> kSizes = {1, 37, 0, (1u << 16) + 123, 5000, 3 * 8192 + 1};
// At least 32 times the thresholds: wakes parked workers by size alone.
const std::vector<std::size_t> kHuge = {(1u << 19) + 1, 3};

template <class T>
constexpr gradstep::DType dtype_of() {
  return sizeof(T) == 4 ? gradstep::DType::f32 : gradstep::DType::f64;
}

struct Run {
  std::vector<std::size_t> sizes = kSizes;
  int steps = 3;
  StepControl control;
  double state_init = 0.0;  // every state element's initial value (Adagrad's accumulator)
  // Written into the largest tensor's gradient (NaN or inf) when non-zero.
  double bad_grad = 0.0;
  // Thread count of each step, cycled; empty: whatever is set.
  std::vector<int> threads;
  // Non-empty: tensor t is a matrix of cols[t] columns (0: a vector), as a batch of
  // batch[t] matrices (0 or absent: 1).
  std::vector<std::size_t> cols, batch;
};

// A tensor list with deterministic contents.
template <class T>
struct Model {
  std::vector<std::vector<T>> param, grad, state[3];
  std::vector<TensorView> views, matrix;

  Model(const Run& run, unsigned mask, const gradstep::SlotExtents& extents) {
    const std::size_t count = run.sizes.size();
    std::size_t largest = 0;
    for (std::size_t t = 0; t < count; ++t) {
      const std::size_t n = run.sizes[t];
      if (n > run.sizes[largest]) largest = t;
      param.emplace_back(n);
      grad.emplace_back(n);
      TensorView shape;  // each state as large as its slot's extent gives
      shape.size = n;
      if (t < run.cols.size() && run.cols[t] != 0 && n != 0) {
        shape.batch = t < run.batch.size() && run.batch[t] != 0 ? run.batch[t] : 1;
        shape.cols = run.cols[t];
        shape.rows = n / shape.batch / shape.cols;
      }
      matrix.push_back(shape);
      for (int s = 0; s < 3; ++s)
        state[s].emplace_back((mask >> s) & 1u ? gradstep::slot_size(extents.slot[s], shape) : 0, T(run.state_init));
      for (std::size_t i = 0; i < n; ++i) {
        param[t][i] = T(std::sin(0.37 * double(i) + double(t)));
        grad[t][i] = T(std::cos(1.3 * double(i) - double(t)));
      }
    }
    if (run.bad_grad != 0.0) grad[largest][run.sizes[largest] / 2 + 7] = T(run.bad_grad);
    for (std::size_t t = 0; t < count; ++t) {
      TensorView v;
      v.param = param[t].data();
      v.grad = grad[t].data();
      for (int s = 0; s < 3; ++s) v.state[s] = state[s][t].empty() ? nullptr : state[s][t].data();
      v.size = run.sizes[t];
      v.dtype = dtype_of<T>();
      v.batch = matrix[t].batch;
      v.rows = matrix[t].rows;
      v.cols = matrix[t].cols;
      views.push_back(v);
    }
  }

  // Every param and state: all that a step writes.
  std::vector<unsigned char> bytes() const {
    std::vector<unsigned char> out;
    auto append = [&](const std::vector<T>& v) {
      const auto* p = reinterpret_cast<const unsigned char*>(v.data());
      out.insert(out.end(), p, p + v.size() * sizeof(T));
    };
    for (std::size_t t = 0; t < param.size(); ++t) {
      append(param[t]);
      for (int s = 0; s < 3; ++s) append(state[s][t]);
    }
    return out;
  }
};

struct Outcome {
  std::vector<unsigned char> bytes;  // params and states after the last step
  std::vector<StepReport> reports;

  bool operator==(const Outcome& o) const {
    if (bytes != o.bytes || reports.size() != o.reports.size()) return false;
    for (std::size_t k = 0; k < reports.size(); ++k) {
      const StepReport &a = reports[k], &b = o.reports[k];
      if (a.found_inf != b.found_inf || a.skipped != b.skipped ||
          std::memcmp(&a.grad_norm, &b.grad_norm, sizeof(double)) != 0)
        return false;
    }
    return true;
  }
};

template <class T, class Options>
Outcome run_steps(const Options& o, const Run& run) {
  Model<T> model(run, gradstep::state_mask(o), gradstep::state_extents(o));
  gradstep::TensorSet set(model.views.data(), model.views.size(), gradstep::state_mask(o),
                          gradstep::state_extents(o));
  Outcome out;
  for (int k = 1; k <= run.steps; ++k) {
    if (!run.threads.empty()) gradstep::set_num_threads(run.threads[std::size_t(k - 1) % run.threads.size()]);
    out.reports.push_back(set.step(o, k, run.control));
  }
  out.bytes = model.bytes();
  return out;
}

// Threads of this process (the caller, the pool's workers, any others), or -1.
int live_threads() {
#if defined(__linux__)
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int n = 0;
  while (const dirent* e = readdir(dir))
    if (e->d_name[0] != '.') ++n;
  closedir(dir);
  return n;
#else
  return -1;
#endif
}

// The run on 2, 3 and 4 threads gives the bytes and reports of the run on one.
template <class T, class Options>
void check_threads_match(const Options& o, const std::string& name, const Run& run = {}) {
  const std::string what = name + (sizeof(T) == 4 ? " f32" : " f64");
  gradstep::set_num_threads(1);
  const Outcome want = run_steps<T>(o, run);
  Run unstepped = run;
  unstepped.steps = 0;
  const bool skipping = run.control.skip_nonfinite && run.bad_grad != 0.0;
  check((want.bytes == run_steps<T>(o, unstepped).bytes) == skipping,
        (what + ": the steps change the buffers (unless skipped)").c_str());
  for (int n : {2, 3, 4}) {
    gradstep::set_num_threads(n);
    check(run_steps<T>(o, run) == want, (what + " on " + std::to_string(n) + " threads = on 1").c_str());
  }
}

template <class T>
void check_every_optimizer() {
  gradstep::SgdOptions sgd;
  sgd.lr = 0.05;
  check_threads_match<T>(sgd, "sgd");
  sgd.momentum = 0.9;
  sgd.nesterov = true;
  sgd.weight_decay = 1e-2;
  check_threads_match<T>(sgd, "sgd nesterov");
  sgd.nesterov = false;
  sgd.dampening = 0.3;
  sgd.maximize = true;
  check_threads_match<T>(sgd, "sgd momentum dampening maximize");

  gradstep::AdagradOptions adagrad;
  adagrad.lr_decay = 1e-3;
  adagrad.weight_decay = 1e-2;
  Run accumulated;
  accumulated.state_init = 0.1;
  check_threads_match<T>(adagrad, "adagrad", accumulated);

  gradstep::AdadeltaOptions adadelta;
  adadelta.weight_decay = 1e-2;
  check_threads_match<T>(adadelta, "adadelta");

  gradstep::RmspropOptions rmsprop;
  check_threads_match<T>(rmsprop, "rmsprop");
  rmsprop.momentum = 0.9;
  rmsprop.centered = true;
  rmsprop.weight_decay = 1e-2;
  check_threads_match<T>(rmsprop, "rmsprop momentum centered");

  gradstep::AdamOptions adam;
  adam.lr = 1e-2;
  check_threads_match<T>(adam, "adam");
  adam.amsgrad = true;
  check_threads_match<T>(adam, "adam amsgrad");
  adam.decoupled_weight_decay = true;
  adam.weight_decay = 1e-2;
  adam.maximize = true;
  check_threads_match<T>(adam, "adamw amsgrad maximize");

  // Adafactor: vectors (a full variance), then matrices whose row and column sums are
  // shared among their chunks (owned rows and column blocks, written by one chunk each).
  gradstep::AdafactorOptions adafactor;
  adafactor.weight_decay = 1e-2;
  check_threads_match<T>(adafactor, "adafactor vectors");
  Run matrices;
  matrices.sizes = {300 * 700, 12, 5 * 40000, 40000 * 3, 0, 4 * 50 * 301, 1};
  matrices.cols = {700, 4, 40000, 3, 0, 301, 0};
  matrices.batch = {1, 1, 1, 1, 0, 4, 0};
  adafactor.maximize = true;
  check_threads_match<T>(adafactor, "adafactor matrices", matrices);
}

}  // namespace

void run_thread_tests() {
  gradstep::AdamOptions adam;
  adam.lr = 1e-2;
  gradstep::SgdOptions momentum;
  momentum.lr = 0.05;
  momentum.momentum = 0.9;
  momentum.weight_decay = 1e-2;

  {  // The first parallel step (which creates the pool) runs at the default count.
    if (const char* env = std::getenv("GRADSTEP_NUM_THREADS"); env && std::atoi(env) > 0)
      check(gradstep::num_threads() == std::atoi(env), "GRADSTEP_NUM_THREADS sets the thread count");
    const int threads = gradstep::num_threads();
    const Outcome got = run_steps<float>(adam, Run{});
    const int live = live_threads();
    check(live < 0 || threads < 2 || live >= threads, "the pool has its workers after a threaded step");
    gradstep::set_num_threads(1);
    check(run_steps<float>(adam, Run{}) == got, "first steps on the default thread count = on 1");
  }
  check_every_optimizer<float>();
  check_every_optimizer<double>();
  {  // Steps that wake parked workers by their size.
    Run huge;
    huge.sizes = kHuge;
    huge.steps = 2;
    check_threads_match<float>(adam, "huge adam", huge);
  }
  {  // The grad-stats pass (global norm, non-finite check) is threaded too.
    Run clipped;
    clipped.control.skip_nonfinite = true;
    clipped.control.max_grad_norm = 1.0;  // the grads' norm is ~200
    check_threads_match<float>(adam, "clipped adam", clipped);
    check_threads_match<double>(momentum, "clipped sgd", clipped);
    clipped.sizes = kHuge;
    clipped.steps = 2;
    check_threads_match<double>(adam, "huge clipped adam", clipped);

    Run skipped;
    skipped.control.skip_nonfinite = true;
    skipped.bad_grad = std::numeric_limits<double>::quiet_NaN();
    check_threads_match<float>(adam, "adam skipping a NaN grad", skipped);
    skipped.bad_grad = -std::numeric_limits<double>::infinity();
    check_threads_match<double>(momentum, "sgd skipping an inf grad", skipped);
    gradstep::set_num_threads(3);
    const Outcome out = run_steps<double>(momentum, skipped);
    check(out.reports.back().skipped && out.reports.back().found_inf, "a non-finite step is reported skipped");

    Run unskipped;  // found and reported, but stepped (with a NaN clipping factor)
    unskipped.control.max_grad_norm = 1.0;
    unskipped.bad_grad = std::numeric_limits<double>::infinity();
    check_threads_match<float>(adam, "adam clipping an inf grad", unskipped);
  }
  {  // The thread count changed between steps: each change joins the
     // pool's workers and starts new ones.
    Run changing;
    changing.steps = 9;
    changing.threads = {2, 4, 1, 3, 4, 2, 1, 2, 3};
    gradstep::set_num_threads(1);
    Run fixed = changing;
    fixed.threads = {1};
    const Outcome want_adam = run_steps<float>(adam, fixed);
    const Outcome want_sgd = run_steps<double>(momentum, fixed);
    check(run_steps<float>(adam, changing) == want_adam, "adam with the thread count changed between steps");
    check(run_steps<double>(momentum, changing) == want_sgd, "sgd with the thread count changed between steps");
  }
  {  // Two sets stepped at once from two threads: one step gets the pool, the
     // other runs on its caller alone (the pool takes one job at a time).
    Run many;
    many.steps = 12;
    gradstep::set_num_threads(1);
    const Outcome want_a = run_steps<float>(adam, many);
    const Outcome want_b = run_steps<double>(momentum, many);
    for (bool change_threads : {false, true}) {
      gradstep::set_num_threads(3);
      Outcome got_a, got_b;
      std::atomic<int> running{2};
      std::thread a([&] {
        got_a = run_steps<float>(adam, many);
        running.fetch_sub(1);
      });
      std::thread b([&] {
        got_b = run_steps<double>(momentum, many);
        running.fetch_sub(1);
      });
      // Meanwhile a third thread changes the thread count (the next step of
      // the set that gets the pool resizes it).
      std::thread c([&] {
        for (int k = 0; change_threads && running.load() > 0; ++k) {
          gradstep::set_num_threads(2 + k % 3);
          std::this_thread::yield();
        }
      });
      a.join();
      b.join();
      c.join();
      const std::string how = change_threads ? " while the thread count changes" : "";
      check(got_a == want_a, ("adam set stepped beside another" + how).c_str());
      check(got_b == want_b, ("sgd set stepped beside another" + how).c_str());
    }
  }
  {  // Leave a busy pool behind: main returns with three workers alive.
    gradstep::set_num_threads(4);
    Run last;
    last.steps = 4;
    const Outcome got = run_steps<float>(adam, last);
    gradstep::set_num_threads(1);
    const Outcome want = run_steps<float>(adam, last);
    gradstep::set_num_threads(4);
    check(run_steps<float>(adam, last) == want && got == want, "adam on 4 threads before exit = on 1");
  }
}

}  // namespace gradstep_test
