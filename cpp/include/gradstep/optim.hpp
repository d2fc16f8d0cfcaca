// gradstep public C++ API: optimizer steps over lists of contiguous buffers.
// Plain structs and functions, no Python. Every function that takes buffers
// validates all of them (and the options) before writing to any, and reports
// bad input by throwing std::invalid_argument.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace gradstep {

enum class DType : std::uint8_t { f32, f64 };

namespace detail {
struct TensorSetImpl;  // TensorSet's state; defined where TensorSet is implemented
}

// One parameter tensor: its buffer, its gradient and up to three state buffers
// of the same dtype and length. Which state slot holds what is fixed per
// optimizer (see the *Options structs); unused slots are nullptr.
struct TensorView {
  void* param = nullptr;
  const void* grad = nullptr;
  void* state[3] = {nullptr, nullptr, nullptr};
  std::size_t size = 0;
  DType dtype = DType::f32;
};

// Defaults and semantics are torch.optim's. `maximize` negates the gradient.
// State slots: [0] momentum_buffer (only when momentum != 0).
struct SgdOptions {
  double lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false, maximize = false;
};
// State slots: [0] sum (initialised by the caller to initial_accumulator_value).
struct AdagradOptions {
  double lr = 1e-2, lr_decay = 0.0, weight_decay = 0.0, eps = 1e-10;
  bool maximize = false;
};
// State slots: [0] square_avg, [1] acc_delta.
struct AdadeltaOptions {
  double lr = 1.0, rho = 0.9, eps = 1e-6, weight_decay = 0.0;
  bool maximize = false;
};
// State slots: [0] square_avg, [1] momentum_buffer (momentum > 0), [2] grad_avg (centered).
struct RmspropOptions {
  double lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0.0, momentum = 0.0;
  bool centered = false, maximize = false;
};
// Adam and AdamW (decoupled_weight_decay). State slots: [0] exp_avg,
// [1] exp_avg_sq, [2] max_exp_avg_sq (amsgrad).
struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool amsgrad = false, decoupled_weight_decay = false, maximize = false;
};

// Throw std::invalid_argument naming the offending option (torch's names).
void validate(const SgdOptions&);
void validate(const AdagradOptions&);
void validate(const AdadeltaOptions&);
void validate(const RmspropOptions&);
void validate(const AdamOptions&);

// Bit i is set when an optimizer with these options uses state slot i.
unsigned state_mask(const SgdOptions&);
unsigned state_mask(const AdagradOptions&);
unsigned state_mask(const AdadeltaOptions&);
unsigned state_mask(const RmspropOptions&);
unsigned state_mask(const AdamOptions&);

// Safeguards applied to a whole step (both off by default, as in torch).
struct StepControl {
  // A step whose gradients hold a NaN or an infinity changes nothing: no
  // param, no state, and the caller should not count it as a step.
  bool skip_nonfinite = false;
  // > 0: scale every gradient by min(1, max_grad_norm / (norm + 1e-6)), where
  // norm is the L2 norm over all gradients (torch.nn.utils.clip_grad_norm_).
  double max_grad_norm = 0.0;
};

struct StepReport {
  bool found_inf = false;  // a gradient held NaN or inf (checked only when asked)
  bool skipped = false;    // found_inf with skip_nonfinite: nothing was written
  double grad_norm = -1.0; // global L2 norm of the gradients; -1 when not computed
};

// A list of tensors whose params and states stay in place from step to step;
// only the gradient pointers change. Everything about the params and states
// is checked once, at construction; set_grads checks only new grad pointers,
// in O(log n) each, so a step over many tensors costs no per-step validation.
// Large steps are shared between the calling thread and a worker pool
// (num_threads() at the time of the step, in total); results are
// bit-identical for any thread count.
class TensorSet {
 public:
  // Checks: known dtype, non-null param and every state in slot_mask, and no
  // written buffer (param, state) overlapping any other buffer. Grads may be
  // null here (then set_grads must come before the first step).
  TensorSet(const TensorView* tensors, std::size_t count, unsigned slot_mask);
  // A copy steps the same buffers. A moved-from set is empty (size() 0) and
  // throws std::logic_error from set_grads, step and stream.
  TensorSet(const TensorSet&);
  TensorSet(TensorSet&&) noexcept;
  TensorSet& operator=(const TensorSet&);
  TensorSet& operator=(TensorSet&&) noexcept;
  ~TensorSet();

  std::size_t size() const;
  const TensorView& operator[](std::size_t i) const;

  // One gradient pointer per tensor (same length and dtype as its param).
  // All are checked before any is taken: on error the set is unchanged. A
  // pointer equal to the one already set for that tensor was checked then
  // (params and states never move), so passing the same grads again costs
  // one comparison per tensor.
  void set_grads(const void* const* grads);

  // One update of every tensor. `step` is the 1-based number of this update
  // (torch's state["step"] after its increment): it drives Adam's bias
  // correction, Adagrad's lr_decay and SGD's first-step momentum buffer.
  // The options' lr is the rate of this update. Options are validated first;
  // on any error nothing is written. The gradient norm and the non-finite
  // check are computed only when `control` asks for them (one extra read of
  // the gradients, before anything is written).
  StepReport step(const SgdOptions&, std::int64_t step, const StepControl& control = {}) const;
  StepReport step(const AdagradOptions&, std::int64_t step, const StepControl& control = {}) const;
  StepReport step(const AdadeltaOptions&, std::int64_t step, const StepControl& control = {}) const;
  StepReport step(const RmspropOptions&, std::int64_t step, const StepControl& control = {}) const;
  StepReport step(const AdamOptions&, std::int64_t step, const StepControl& control = {}) const;

  // A memory-bandwidth probe with this set's access pattern and threading:
  // reads grad, param and the states of the slot mask, writes param and
  // states back, with two flops per written element. `gradstep bench` times
  // it as the roof an optimizer step over the same buffers could reach.
  // Overwrites the params and states (with finite values).
  void stream() const;

 private:
  friend struct detail::TensorSetImpl;
  std::unique_ptr<detail::TensorSetImpl> impl_;  // buffers, their checked ranges, the work plan
};

// Convenience for callers without a persistent set: validate everything, step once.
template <class Options>
StepReport step(const Options& options, const TensorView* tensors, std::size_t count, std::int64_t step,
                const StepControl& control = {}) {
  TensorSet set(tensors, count, state_mask(options));
  return set.step(options, step, control);
}

}  // namespace gradstep
