// gradstep public C++ API: optimizer steps over lists of contiguous buffers.
// Plain structs and functions, no Python. Every function that takes buffers
// validates all of them (and the options) before writing to any, and reports
// bad input by throwing std::invalid_argument.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "gradstep/declaration.hpp"

namespace gradstep {

// Element types. bf16 and f16 are storage only: a kernel computes their
// elements in float32 (each chunk widened, updated and rounded back; see
// TensorView). `same` is for TensorView's grad_dtype and state_dtype only:
// the param's dtype.
enum class DType : std::uint8_t { f32, f64, bf16, f16, same };

// How a step stores a float32 result into a bf16 or f16 param: to nearest
// (ties to even, the IEEE conversion, torch's .to()), or stochastically, to
// one of the two neighbours with the probability of its nearness, from 32
// random bits keyed by (seed, step, tensor, element) (StepControl).
enum class Rounding : std::uint8_t { nearest, stochastic };

namespace detail {
struct TensorSetImpl;  // TensorSet's state; defined where TensorSet is implemented
}

// Most state buffers an optimizer has (Prodigy: s, p0, exp_avg, exp_avg_sq).
constexpr int kMaxStates = 4;

// One parameter tensor: its buffer, its gradient and up to kMaxStates state
// buffers. Which state slot holds what is fixed per optimizer (its
// Declaration's slots); unused slots are nullptr. A state holds the param's
// size, or what its slot's declared Extent gives for this param (Adafactor's
// row_var: one element per row of its matrix).
//
// Dtypes: a f32 or f64 param has grads and states of its own dtype. A bf16
// or f16 param (`dtype`) is computed in float32: its grad may be bf16, f16
// or f32 (`grad_dtype`), its states f32 or its own dtype (`state_dtype`; a
// state of another extent than the param's is always f32), and `master`,
// when set, is a float32 copy of it (size elements) that the step updates
// and the param is rounded from. A f32 param may take bf16 or f16 grads.
struct TensorView {
  void* param = nullptr;
  const void* grad = nullptr;
  void* state[kMaxStates] = {};
  std::size_t size = 0;
  DType dtype = DType::f32;
  DType grad_dtype = DType::same;
  DType state_dtype = DType::same;
  float* master = nullptr;
  // The param as a batch of matrices, row-major: its last two dims (rows,
  // cols) and the product of the others (batch, 1 for a 2-d param), with
  // batch * rows * cols == size. All 0: not a matrix (a 0-d or 1-d param,
  // or a caller that has no shape; only Extent::rows/cols/vector look).
  std::size_t batch = 0, rows = 0, cols = 0;
};

// A state slot's extent as a set is built for it: the declared Extent and,
// for Extent::strided, the stride the options give (1 otherwise).
struct SlotExtent {
  Extent extent = Extent::full;
  std::size_t stride = 1;
};
struct SlotExtents {
  SlotExtent slot[kMaxStates];
};

// The elements of a state of this extent for this param (0: the param has
// no buffer in that slot). Throws std::invalid_argument for a stride of 0.
std::size_t slot_size(const SlotExtent& extent, const TensorView& param);

// Each optimizer: its options struct, whose member initializers are the
// defaults (its reference's: torch.optim's, or a package's where torch has
// none), then its Declaration (declaration.hpp): class name and reference,
// fields with bounds and how they appear in Python and in the reference,
// state slots under the reference's names and when each is needed,
// cross-field rules, variants and the update equations the kernel in
// cpp/src/algorithms computes. Everything else about an optimizer
// (validation, the Python class and torch adapter, the kernel function,
// checkpoints, stubs, docs) is derived from the two.
//
// `lr` is the rate of the update the options are used for (TensorSet::step,
// gs.kernels.*_step). A Python optimizer's TensorSet owns the base rate or
// schedule and the plateau scaling, and fills lr in its own copy per step.
// `maximize` negates the gradient. Decay factors are kept to [0, 1] even where
// torch checks only >= 0: above 1 a running average's weight 1 - factor turns
// negative (RMSprop's square average can then go below zero and the step
// turns NaN), and a momentum above 1 weighs old gradients more than new ones,
// so the buffer grows geometrically. 1 itself is meaningful (no decay: a plain sum).

struct SgdOptions {
  double lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false, maximize = false;
};
template <>
struct Declaration<SgdOptions> {
  using O = SgdOptions;
  // Smallest step (elements) shared with the thread pool (bench/threshold.py).
  static constexpr std::size_t parallel_min = 1u << 15;
  static constexpr const char* name = "SGD";
  static constexpr const char* reference = "torch.optim";
  static constexpr const char* options = "SgdOptions";
  static constexpr const char* summary = "momentum, dampening, Nesterov, L2 weight decay, maximize";
  static constexpr const char* equations =
      "g  = ±grad + weight_decay * p\n"
      "b  = g                                  on the first step\n"
      "b  = momentum * b + (1 - dampening) * g afterwards\n"
      "d  = g + momentum * b  (nesterov)   or  b\n"
      "p -= lr * d                            (d = g without momentum)\n";
  static constexpr bool torch_step_state = false;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("momentum", &O::momentum, Bound::unit_closed),
      real("dampening", &O::dampening, Bound::unit_closed),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      flag("nesterov", &O::nesterov),
      flag("maximize", &O::maximize).keyword_only(),
  };
  static constexpr std::array slots{Slot<O>{"momentum_buffer", &O::momentum}};
  static constexpr std::array checks{Check<O>{"nesterov requires momentum > 0 and dampening = 0",
                                               &O::nesterov, &O::momentum, &O::dampening}};
  static constexpr std::array<Variant, 0> variants{};
};

struct AdagradOptions {
  double lr = 1e-2, lr_decay = 0.0, weight_decay = 0.0, eps = 1e-10;
  bool maximize = false;
};
template <>
struct Declaration<AdagradOptions> {
  using O = AdagradOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  static constexpr const char* name = "Adagrad";
  static constexpr const char* reference = "torch.optim";
  static constexpr const char* options = "AdagradOptions";
  static constexpr const char* summary = "lr_decay, weight_decay, initial_accumulator_value, eps";
  static constexpr const char* equations =
      "g    = ±grad + weight_decay * p\n"
      "clr  = lr / (1 + (step - 1) * lr_decay)\n"
      "sum += g * g                    (sum starts at initial_accumulator_value)\n"
      "p   -= clr * g / (sqrt(sum) + eps)\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("lr_decay", &O::lr_decay, Bound::nonneg),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      initial_value<O>("initial_accumulator_value", 0.0, Bound::nonneg, 0),
      real("eps", &O::eps, Bound::nonneg),
      flag("maximize", &O::maximize).keyword_only(),
  };
  static constexpr std::array slots{Slot<O>{"sum"}};
  static constexpr std::array<Check<O>, 0> checks{};
  static constexpr std::array<Variant, 0> variants{};
};

struct AdadeltaOptions {
  double lr = 1.0, rho = 0.9, eps = 1e-6, weight_decay = 0.0;
  bool maximize = false;
};
template <>
struct Declaration<AdadeltaOptions> {
  using O = AdadeltaOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  static constexpr const char* name = "Adadelta";
  static constexpr const char* reference = "torch.optim";
  static constexpr const char* options = "AdadeltaOptions";
  static constexpr const char* summary = "rho, eps, weight_decay; lr scales the delta";
  static constexpr const char* equations =
      "g      = ±grad + weight_decay * p\n"
      "sq     = rho * sq + (1 - rho) * g * g\n"
      "delta  = sqrt(acc + eps) / sqrt(sq + eps) * g\n"
      "acc    = rho * acc + (1 - rho) * delta * delta\n"
      "p     -= lr * delta\n"
      "(sq: square_avg, acc: acc_delta)\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      // lr = 1 is Zeiler's Adadelta, which has no learning rate.
      real("lr", &O::lr, Bound::nonneg).with_kernel_default(),
      real("rho", &O::rho, Bound::unit_closed),
      real("eps", &O::eps, Bound::nonneg),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      flag("maximize", &O::maximize).keyword_only(),
  };
  static constexpr std::array slots{Slot<O>{"square_avg"}, Slot<O>{"acc_delta"}};
  static constexpr std::array<Check<O>, 0> checks{};
  static constexpr std::array<Variant, 0> variants{};
};

struct RmspropOptions {
  double lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0.0, momentum = 0.0;
  bool centered = false, maximize = false;
};
template <>
struct Declaration<RmspropOptions> {
  using O = RmspropOptions;
  static constexpr std::size_t parallel_min = 1u << 15;
  static constexpr const char* name = "RMSprop";
  static constexpr const char* reference = "torch.optim";
  static constexpr const char* options = "RmspropOptions";
  static constexpr const char* summary = "alpha, eps, weight_decay, momentum, centered";
  static constexpr const char* equations =
      "g    = ±grad + weight_decay * p\n"
      "sq   = alpha * sq + (1 - alpha) * g * g\n"
      "ga   = lerp(ga, g, 1 - alpha)                 (centered)\n"
      "avg  = sqrt(sq - ga * ga) + eps   (centered)   or  sqrt(sq) + eps\n"
      "buf  = momentum * buf + g / avg,  p -= lr * buf   (momentum > 0)\n"
      "p   -= lr * g / avg                              (otherwise)\n"
      "(sq: square_avg, ga: grad_avg, buf: momentum_buffer)\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("alpha", &O::alpha, Bound::unit_closed),
      real("eps", &O::eps, Bound::nonneg),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      real("momentum", &O::momentum, Bound::unit_closed),
      flag("centered", &O::centered),
      flag("maximize", &O::maximize).keyword_only(),
  };
  static constexpr std::array slots{Slot<O>{"square_avg"}, Slot<O>{"momentum_buffer", &O::momentum},
                                    Slot<O>{"grad_avg", nullptr, &O::centered}};
  static constexpr std::array<Check<O>, 0> checks{};
  static constexpr std::array<Variant, 0> variants{};
};

struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool amsgrad = false, decoupled_weight_decay = false, maximize = false;
};
template <>
struct Declaration<AdamOptions> {
  using O = AdamOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  static constexpr const char* name = "Adam";
  static constexpr const char* reference = "torch.optim";
  static constexpr const char* options = "AdamOptions";
  static constexpr const char* summary = "betas, eps, L2 weight_decay, amsgrad";
  static constexpr const char* equations =
      "p     *= 1 - lr * weight_decay                 (AdamW: decoupled decay)\n"
      "g      = ±grad + weight_decay * p               (Adam: L2 decay)\n"
      "m      = lerp(m, g, 1 - beta1)\n"
      "v      = beta2 * v + (1 - beta2) * g * g\n"
      "vmax   = max(vmax, v)                           (amsgrad; v below means vmax)\n"
      "denom  = sqrt(v) / sqrt(1 - beta2^step) + eps\n"
      "p     -= lr / (1 - beta1^step) * m / denom\n"
      "(m: exp_avg, v: exp_avg_sq, vmax: max_exp_avg_sq; eps is added after the\n"
      "bias correction of v, as torch does)\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("beta1", &O::beta1, Bound::unit_open).in("betas"),
      real("beta2", &O::beta2, Bound::unit_open).in("betas"),
      real("eps", &O::eps, Bound::nonneg),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      flag("amsgrad", &O::amsgrad),
      flag("decoupled_weight_decay", &O::decoupled_weight_decay).fixed(),
      flag("maximize", &O::maximize).keyword_only(),
  };
  static constexpr std::array slots{Slot<O>{"exp_avg"}, Slot<O>{"exp_avg_sq"},
                                    Slot<O>{"max_exp_avg_sq", nullptr, &O::amsgrad}};
  static constexpr std::array<Check<O>, 0> checks{};
  static constexpr std::array variants{
      Variant{"AdamW", "Adam with decoupled weight decay (default 1e-2)",
              {Override{"decoupled_weight_decay", 1.0, true}, Override{"weight_decay", 1e-2, false}},
              2}};
};

struct AdamaxOptions {
  double lr = 2e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool maximize = false;
};
template <>
struct Declaration<AdamaxOptions> {
  using O = AdamaxOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  static constexpr const char* name = "Adamax";
  static constexpr const char* reference = "torch.optim";
  static constexpr const char* options = "AdamaxOptions";
  static constexpr const char* summary = "Adam with an infinity norm: betas, eps, L2 weight_decay";
  static constexpr const char* equations =
      "g  = ±grad + weight_decay * p\n"
      "m  = lerp(m, g, 1 - beta1)\n"
      "u  = max(beta2 * u, |g| + eps)\n"
      "p -= lr / (1 - beta1^step) * m / u\n"
      "(m: exp_avg, u: exp_inf)\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("beta1", &O::beta1, Bound::unit_open).in("betas"),
      real("beta2", &O::beta2, Bound::unit_open).in("betas"),
      real("eps", &O::eps, Bound::nonneg),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      flag("maximize", &O::maximize).keyword_only(),
  };
  static constexpr std::array slots{Slot<O>{"exp_avg"}, Slot<O>{"exp_inf"}};
  static constexpr std::array<Check<O>, 0> checks{};
  static constexpr std::array<Variant, 0> variants{};
};

struct RadamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool decoupled_weight_decay = false, maximize = false;
};
template <>
struct Declaration<RadamOptions> {
  using O = RadamOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  static constexpr const char* name = "RAdam";
  static constexpr const char* reference = "torch.optim";
  static constexpr const char* options = "RadamOptions";
  static constexpr const char* summary = "rectified Adam: betas, eps, weight_decay (L2 or decoupled)";
  static constexpr const char* equations =
      "p     *= 1 - lr * weight_decay                 (decoupled_weight_decay)\n"
      "g      = ±grad + weight_decay * p               (otherwise: L2 decay)\n"
      "m      = lerp(m, g, 1 - beta1)\n"
      "v      = beta2 * v + (1 - beta2) * g * g\n"
      "rho_inf = 2 / (1 - beta2) - 1\n"
      "rho    = rho_inf - 2 * step * beta2^step / (1 - beta2^step)\n"
      "rect   = sqrt((rho - 4) (rho - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho))\n"
      "p     -= lr / (1 - beta1^step) * m * rect * sqrt(1 - beta2^step) / (sqrt(v) + eps)\n"
      "                                                (rho > 5)\n"
      "p     -= lr / (1 - beta1^step) * m               (rho <= 5)\n"
      "(m: exp_avg, v: exp_avg_sq)\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("beta1", &O::beta1, Bound::unit_open).in("betas"),
      real("beta2", &O::beta2, Bound::unit_open).in("betas"),
      real("eps", &O::eps, Bound::nonneg),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      flag("decoupled_weight_decay", &O::decoupled_weight_decay),
      flag("maximize", &O::maximize).keyword_only(),
  };
  static constexpr std::array slots{Slot<O>{"exp_avg"}, Slot<O>{"exp_avg_sq"}};
  static constexpr std::array<Check<O>, 0> checks{};
  static constexpr std::array<Variant, 0> variants{};
};

struct NadamOptions {
  double lr = 2e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, momentum_decay = 4e-3;
  bool decoupled_weight_decay = false, maximize = false;
  // mu_1 * ... * mu_step, this step's mu included: torch's state["mu_product"]
  // after its update. 0 (the default): computed from the step count as torch
  // computes it in float32 (nadam.inl). Not a constructor argument: set per
  // step by a caller holding torch's value (gradstep.torch).
  double mu_product = 0.0;
};
template <>
struct Declaration<NadamOptions> {
  using O = NadamOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  static constexpr const char* name = "NAdam";
  static constexpr const char* reference = "torch.optim";
  static constexpr const char* options = "NadamOptions";
  static constexpr const char* summary = "Adam with Nesterov momentum: betas, eps, weight_decay, momentum_decay";
  static constexpr const char* equations =
      "p     *= 1 - lr * weight_decay                 (decoupled_weight_decay)\n"
      "g      = ±grad + weight_decay * p               (otherwise: L2 decay)\n"
      "mu     = beta1 * (1 - 0.5 * 0.96^(step * momentum_decay))\n"
      "mu'    = beta1 * (1 - 0.5 * 0.96^((step + 1) * momentum_decay))\n"
      "prod   = mu_1 * ... * mu_step                    (torch's float32 mu_product)\n"
      "m      = lerp(m, g, 1 - beta1)\n"
      "v      = beta2 * v + (1 - beta2) * g * g\n"
      "denom  = sqrt(v) / sqrt(1 - beta2^step) + eps\n"
      "p     -= lr * (1 - mu) / (1 - prod) * g / denom\n"
      "       + lr * mu' / (1 - prod * mu') * m / denom\n"
      "(m: exp_avg, v: exp_avg_sq)\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("beta1", &O::beta1, Bound::unit_open).in("betas"),
      real("beta2", &O::beta2, Bound::unit_open).in("betas"),
      real("eps", &O::eps, Bound::nonneg),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      real("momentum_decay", &O::momentum_decay, Bound::nonneg),
      flag("decoupled_weight_decay", &O::decoupled_weight_decay),
      flag("maximize", &O::maximize).keyword_only(),
      real("mu_product", &O::mu_product, Bound::unit_open).fixed(),
  };
  static constexpr std::array slots{Slot<O>{"exp_avg"}, Slot<O>{"exp_avg_sq"}};
  static constexpr std::array<Check<O>, 0> checks{};
  static constexpr std::array<Variant, 0> variants{};
};

// The learning-rate-free optimizers (Prodigy, D-Adaptation): lr multiplies
// the step size d they estimate from the gradients (1.0, their default, is
// the method as published). d and the sums it is estimated from are carried
// from step to step (Kind::carried); the reductions span every tensor of the
// set, in a fixed order (the kernel's step() in cpp/src/algorithms). Their
// references (prodigyopt 1.1.2, dadaptation 3.2) also count steps in k, which
// a step that finds nothing to adapt to does not advance: k is carried too.

// Their fsdp_in_use all-reduces the sums over the ranks of a sharded model.
constexpr const char* kNoFsdp =
    "fsdp_in_use=True is not supported: gradstep steps one process's tensors and does not "
    "all-reduce the d estimate's sums across ranks";

struct ProdigyOptions {
  double lr = 1.0, beta1 = 0.9, beta2 = 0.999;
  double beta3 = __builtin_nan("");  // unset: sqrt(beta2)
  double eps = 1e-8, weight_decay = 0.0;
  bool decouple = true, use_bias_correction = false, safeguard_warmup = false;
  double d0 = 1e-6, d_coef = 1.0, growth_rate = __builtin_inf();
  bool fsdp_in_use = false;
  double slice_p = 1.0;
  bool maximize = false;
  // carried
  double d = 1e-6, d_max = 1e-6, d_numerator = 0.0, k = 0.0;
};
template <>
struct Declaration<ProdigyOptions> {
  using O = ProdigyOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  static constexpr int partial_sums = 2;  // <g, p0 - p>, ||s||_1
  // Per param group (TensorSet::step_groups): weight_decay, eps, safeguard_warmup, lr (0: left out of the sums).
  static constexpr bool group_options = true;
  static constexpr const char* name = "Prodigy";
  static constexpr const char* reference = "prodigyopt";
  static constexpr const char* options = "ProdigyOptions";
  static constexpr const char* summary = "learning-rate-free Adam (prodigyopt.Prodigy 1.1.2): lr multiplies the estimated d";
  static constexpr const char* equations =
      "g      = ±grad + weight_decay * p                (decouple=False: L2 decay)\n"
      "bc     = sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) (use_bias_correction; else 1)\n"
      "dlr    = d * lr * bc\n"
      "num    = beta3 * d_numerator + (d / d0) * dlr * sum <g, p0 - p>   (over all tensors)\n"
      "m      = beta1 * m + d * (1 - beta1) * g          (beta1 > 0)\n"
      "v      = beta2 * v + d^2 * (1 - beta2) * g * g\n"
      "s      = beta3 * s + (d / d0) * dlr * g           (safeguard_warmup: (d / d0) * d * g)\n"
      "den    = sum |s|                                  (over all tensors; 0: stop here, d and k kept)\n"
      "d_hat  = d_coef * num / den\n"
      "d      = max(d, d_hat) while d = d0;  d_max = max(d_max, d_hat);  d = min(d_max, d * growth_rate)\n"
      "p     *= 1 - weight_decay * dlr                   (decouple=True)\n"
      "p     -= dlr * m / (sqrt(v) + d * eps)            (beta1 = 0: dlr * d * g / (sqrt(v) + d * eps))\n"
      "d_numerator = num;  k += 1\n"
      "(s, p0 and the sum <g, p0 - p> take every slice_p-th element of each param, p.flatten()[::slice_p])\n"
      "(dlr and the averages use d before its update, the denominator d after it; beta3 = None:\n"
      "sqrt(beta2); lr = 0: the step changes nothing. m: exp_avg, v: exp_avg_sq; p0 starts as a\n"
      "copy of p; d, d_max, d_numerator and k are carried in state_dict()['carried'])\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg).with_kernel_default(),
      real("beta1", &O::beta1, Bound::unit_open).in("betas"),
      real("beta2", &O::beta2, Bound::unit_open).in("betas"),
      real("beta3", &O::beta3, Bound::unit_closed).or_none(__builtin_nan("")),
      real("eps", &O::eps, Bound::positive),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      flag("decouple", &O::decouple),
      flag("use_bias_correction", &O::use_bias_correction),
      flag("safeguard_warmup", &O::safeguard_warmup),
      real("d0", &O::d0, Bound::positive),
      real("d_coef", &O::d_coef, Bound::nonneg),
      real("growth_rate", &O::growth_rate, Bound::positive_or_inf),
      flag("fsdp_in_use", &O::fsdp_in_use),
      real("slice_p", &O::slice_p, Bound::count),
      flag("maximize", &O::maximize).keyword_only().not_in_reference(),
      real("d", &O::d, Bound::positive).carried("d0"),
      real("d_max", &O::d_max, Bound::positive).carried("d0"),
      real("d_numerator", &O::d_numerator, Bound::finite).carried(),
      real("k", &O::k, Bound::count).carried(),
  };
  // exp_avg last: a state needed only by some options comes after those always needed.
  // s and p0 hold every slice_p-th element of the param (prodigyopt: p.flatten()[::slice_p]).
  static constexpr std::array slots{Slot<O>{"s"}.every(&O::slice_p),
                                    Slot<O>{"p0", nullptr, nullptr, true}.every(&O::slice_p), Slot<O>{"exp_avg_sq"},
                                    Slot<O>{"exp_avg", &O::beta1}};
  static constexpr std::array checks{
      Check<O>{kNoFsdp, &O::fsdp_in_use},
      Check<O>{"slice_p must be a whole number >= 1 (s and p0 keep every slice_p-th element of each param)",
               nullptr, &O::slice_p},
  };
  static constexpr std::array<Variant, 0> variants{};
};

struct DadaptAdamOptions {
  double lr = 1.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, log_every = 0.0;
  bool decouple = false, use_bias_correction = false;
  double d0 = 1e-6, growth_rate = __builtin_inf();
  bool fsdp_in_use = false, maximize = false;
  // carried
  double d = 1e-6, numerator_weighted = 0.0, k = 0.0;
};
template <>
struct Declaration<DadaptAdamOptions> {
  using O = DadaptAdamOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  static constexpr int partial_sums = 2;  // <g, s / (sqrt(v) + eps)>, ||s||_1
  // Per param group (TensorSet::step_groups): weight_decay, eps, lr (0: left out of the sums).
  static constexpr bool group_options = true;
  static constexpr const char* name = "DAdaptAdam";
  static constexpr const char* reference = "dadaptation";
  static constexpr const char* options = "DadaptAdamOptions";
  static constexpr const char* summary = "D-Adaptation Adam (dadaptation.DAdaptAdam 3.2): lr multiplies the estimated d";
  static constexpr const char* equations =
      "g      = ±grad + weight_decay * p                (decouple=False: L2 decay)\n"
      "bc     = sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) (use_bias_correction; else 1)\n"
      "dlr    = d * lr * bc;  b = sqrt(beta2)\n"
      "acc    = dlr * sum <g, s / (sqrt(v) + eps)>       (over all tensors, old s and v)\n"
      "m      = beta1 * m + dlr * (1 - beta1) * g\n"
      "v      = beta2 * v + (1 - beta2) * g * g\n"
      "s      = b * s + dlr * (1 - b) * g\n"
      "nw     = b * numerator_weighted + (1 - b) * acc\n"
      "sk     = sum |s|                                  (over all tensors; 0: stop here, d and k kept)\n"
      "d      = max(d, min(nw / ((1 - b) * sk), d * growth_rate))\n"
      "p     *= 1 - weight_decay * dlr                   (decouple=True)\n"
      "p     -= m / (sqrt(v) + eps)\n"
      "numerator_weighted = nw;  k += 1\n"
      "(lr = 0: the step changes nothing; log_every is accepted and ignored (the reference's\n"
      "logging). m: exp_avg, v: exp_avg_sq; d, numerator_weighted and k are carried in\n"
      "state_dict()['carried'])\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg).with_kernel_default(),
      real("beta1", &O::beta1, Bound::unit_open).in("betas"),
      real("beta2", &O::beta2, Bound::unit_open).in("betas"),
      real("eps", &O::eps, Bound::positive),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      real("log_every", &O::log_every, Bound::count),
      flag("decouple", &O::decouple),
      flag("use_bias_correction", &O::use_bias_correction),
      real("d0", &O::d0, Bound::positive).on_optimizer(),
      real("growth_rate", &O::growth_rate, Bound::positive_or_inf),
      flag("fsdp_in_use", &O::fsdp_in_use),
      flag("maximize", &O::maximize).keyword_only().not_in_reference(),
      real("d", &O::d, Bound::positive).carried("d0"),
      real("numerator_weighted", &O::numerator_weighted, Bound::finite).carried(),
      real("k", &O::k, Bound::count).carried(),
  };
  static constexpr std::array slots{Slot<O>{"s"}, Slot<O>{"exp_avg"}, Slot<O>{"exp_avg_sq"}};
  static constexpr std::array checks{
      Check<O>{kNoFsdp, &O::fsdp_in_use},
  };
  static constexpr std::array<Variant, 0> variants{};
};

struct DadaptSgdOptions {
  double lr = 1.0, momentum = 0.0, weight_decay = 0.0, log_every = 0.0;
  double d0 = 1e-6, growth_rate = __builtin_inf();
  bool fsdp_in_use = false, maximize = false;
  // carried
  double d = 1e-6, numerator_weighted = 0.0, g0_norm = 0.0;
};
template <>
struct Declaration<DadaptSgdOptions> {
  using O = DadaptSgdOptions;
  static constexpr std::size_t parallel_min = 1u << 15;
  static constexpr int partial_sums = 2;  // <g, s>, ||s||^2 (or ||grad||^2 on the first step)
  // Per param group (TensorSet::step_groups): lr only (0: left out of the sums), as dadaptation reads it.
  static constexpr bool group_options = true;
  static constexpr const char* name = "DAdaptSGD";
  static constexpr const char* reference = "dadaptation";
  static constexpr const char* options = "DadaptSgdOptions";
  static constexpr const char* summary = "D-Adaptation SGD (dadaptation.DAdaptSGD 3.2): lr multiplies the estimated d";
  static constexpr const char* equations =
      "g0_norm = sqrt(sum ±grad * ±grad)                  (first step: over all tensors, no decay;\n"
      "                                                   a zero first gradient changes nothing)\n"
      "g      = ±grad + weight_decay * p\n"
      "dlr    = d * lr / g0_norm\n"
      "nw     = numerator_weighted + dlr * sum <g, s>     (over all tensors, old s)\n"
      "s     += dlr * g\n"
      "sk     = sum s * s                                (over all tensors; 0: stop here, d kept)\n"
      "d      = max(d, min(2 * nw / sqrt(sk), d * growth_rate))\n"
      "p      = (1 - ck) * p + ck * (x0 - s),  ck = 1 - momentum\n"
      "numerator_weighted = nw\n"
      "(lr = 0: the step changes nothing; log_every is accepted and ignored. x0 starts as a copy\n"
      "of p; the reference's z = x0 - s is not stored; d, numerator_weighted and g0_norm are\n"
      "carried in state_dict()['carried'])\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg).with_kernel_default(),
      real("momentum", &O::momentum, Bound::unit_open),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      real("log_every", &O::log_every, Bound::count),
      real("d0", &O::d0, Bound::positive).on_optimizer(),
      real("growth_rate", &O::growth_rate, Bound::positive_or_inf),
      flag("fsdp_in_use", &O::fsdp_in_use),
      flag("maximize", &O::maximize).keyword_only().not_in_reference(),
      real("d", &O::d, Bound::positive).carried("d0"),
      real("numerator_weighted", &O::numerator_weighted, Bound::finite).carried(),
      real("g0_norm", &O::g0_norm, Bound::nonneg).carried(),
  };
  static constexpr std::array slots{Slot<O>{"s"}, Slot<O>{"x0", nullptr, nullptr, true}};
  static constexpr std::array checks{
      Check<O>{kNoFsdp, &O::fsdp_in_use},
  };
  static constexpr std::array<Variant, 0> variants{};
};

// LAMB (You et al. 2019) as timm's Lamb (timm.optim.Lamb 1.0.31, the NVIDIA
// FusedLAMB variant): Adam's direction scaled per tensor by a trust ratio
// ||p|| / ||u||, after a global gradient clip of its own (timm's formula, not
// the max_grad_norm safeguard's torch formula; it takes the safeguard's name
// and place in gs.Lamb).
struct LambOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-6, weight_decay = 0.01, max_grad_norm = 1.0;
  bool bias_correction = true, grad_averaging = true, trust_clip = false, always_adapt = false,
       caution = false, decoupled_decay = false, corrected_weight_decay = false, maximize = false;
  // timm's max_lr_snapshot: the rate the optimizer was made with (carried,
  // from lr), the peak in corrected_weight_decay's lr^2 / max_lr.
  double max_lr = 0.0;
};
template <>
struct Declaration<LambOptions> {
  using O = LambOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  // Per chunk: sum of p^2, then sum of u^2 (or, with caution, the count of
  // u * g > 0), then with caution sum of u^2 (lamb.inl).
  static constexpr int partial_sums = 3;
  static constexpr bool per_tensor = true;
  // Per param group (TensorSet::step_groups): every option but max_grad_norm (timm's clip is global).
  static constexpr bool group_options = true;
  static constexpr const char* name = "Lamb";
  static constexpr const char* reference = "timm.optim";  // timm 1.0.31
  static constexpr const char* options = "LambOptions";
  static constexpr const char* summary = "LAMB, Adam's update scaled per tensor by a trust ratio, global grad clip";
  static constexpr const char* equations =
      "g      = ±grad / max(1, norm / max_grad_norm)    (norm: L2 over every tensor's grad;\n"
      "                                                  no clipping when max_grad_norm is None)\n"
      "m      = lerp(m, g, 1 - beta1)   (grad_averaging)   or  beta1 * m + g\n"
      "v      = beta2 * v + (1 - beta2) * g * g\n"
      "bc1    = 1 - beta1^step, bc2 = 1 - beta2^step    (bias_correction, else 1)\n"
      "u      = m / bc1 / (sqrt(v) / sqrt(bc2) + eps)\n"
      "c      = [u * g > 0] per element                 (caution)\n"
      "u     *= c / max(mean(c), 1e-3)                  (caution; mean over the tensor)\n"
      "p     -= lr * weight_decay * p                   (decoupled_decay;\n"
      "         lr^2 / max_lr for lr with corrected_weight_decay)\n"
      "u     += weight_decay * p                        (otherwise)\n"
      "r      = ||p|| / ||u|| over the tensor            (weight_decay != 0 or always_adapt;\n"
      "         1 when either norm is 0; min(r, 1) with trust_clip; else r = 1)\n"
      "p     -= lr * r * u\n"
      "(m: exp_avg, v: exp_avg_sq)\n";
  static constexpr bool torch_step_state = false;  // timm counts steps in the param group
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      flag("bias_correction", &O::bias_correction),
      real("beta1", &O::beta1, Bound::unit_open).in("betas"),
      real("beta2", &O::beta2, Bound::unit_open).in("betas"),
      real("eps", &O::eps, Bound::nonneg),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      flag("grad_averaging", &O::grad_averaging),
      real("max_grad_norm", &O::max_grad_norm, Bound::nonneg).or_none(0.0),
      flag("trust_clip", &O::trust_clip),
      flag("always_adapt", &O::always_adapt),
      flag("caution", &O::caution),
      flag("decoupled_decay", &O::decoupled_decay),
      flag("corrected_weight_decay", &O::corrected_weight_decay),
      reference_flag<O>("foreach", false),  // timm's implementation choice (its default None: gradstep.torch)
      flag("maximize", &O::maximize).keyword_only().not_in_reference(),
      real("max_lr", &O::max_lr, Bound::nonneg).carried("lr"),
  };
  static constexpr std::array slots{Slot<O>{"exp_avg"}, Slot<O>{"exp_avg_sq"}};
  static constexpr std::array checks{Check<O>{
      "corrected_weight_decay requires max_lr > 0 (the lr the optimizer was made with: give the peak rate)",
      &O::corrected_weight_decay, &O::max_lr}};
  static constexpr std::array<Variant, 0> variants{};
};

// Schedule-Free (Defazio et al. 2024, "The Road Less Scheduled"), as the
// schedulefree package 1.4.1 computes it (AdamWScheduleFree, SGDScheduleFree):
// no schedule is needed; the params hold y, between the SGD/Adam iterate z and
// the average x of the z's, while training (train()), and x for evaluation
// (eval()). Its group scalars lr_max and weight_sum are carried from step to
// step; its k is the step count. lr_max starts at 0 where the reference starts
// it at -1: both give max(lr, .) = lr at the first step, as every rate is >= 0.
struct AdamwScheduleFreeOptions {
  double lr = 0.0025, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, warmup_steps = 0.0, r = 0.0,
         weight_lr_power = 2.0;
  bool maximize = false;
  double lr_max = 0.0, weight_sum = 0.0;  // carried
  bool train_mode = false;               // carried: the params hold y (else x)
};
template <>
struct Declaration<AdamwScheduleFreeOptions> {
  using O = AdamwScheduleFreeOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  static constexpr const char* name = "AdamWScheduleFree";
  static constexpr const char* options = "AdamwScheduleFreeOptions";
  static constexpr const char* reference = "schedulefree";  // schedulefree 1.4.1
  static constexpr const char* summary =
      "Schedule-Free AdamW: betas, eps, weight_decay at y, warmup_steps, r, weight_lr_power; train()/eval()";
  static constexpr const char* equations =
      "lr_t    = lr * step / warmup_steps  while step - 1 < warmup_steps, else lr\n"
      "lr_max  = max(lr_max, lr_t)\n"
      "w       = step^r * lr_max^weight_lr_power,  weight_sum += w\n"
      "c       = w / weight_sum                    (0 while weight_sum = 0)\n"
      "v       = beta2 * v + (1 - beta2) * g * g   (g = ±grad)\n"
      "u       = g / (sqrt(v / (1 - beta2^step)) + eps) + weight_decay * y\n"
      "y       = lerp(y, z, c) + lr_t * (beta1 * (1 - c) - 1) * u\n"
      "z      -= lr_t * u\n"
      "train(): p = lerp(p, z, 1 - beta1)  (x to y);  eval(): p = lerp(p, z, 1 - 1/beta1)  (y to x)\n"
      "(p holds y while training, the average x after eval(); v: exp_avg_sq;\n"
      "lr_max, weight_sum and train_mode are carried; float32 values are computed\n"
      "in double and rounded once when stored)\n";
  static constexpr bool torch_step_state = false;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("beta1", &O::beta1, Bound::unit_open).in("betas"),
      real("beta2", &O::beta2, Bound::unit_open).in("betas"),
      real("eps", &O::eps, Bound::nonneg),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      real("warmup_steps", &O::warmup_steps, Bound::nonneg),
      real("r", &O::r, Bound::nonneg),
      real("weight_lr_power", &O::weight_lr_power, Bound::nonneg),
      reference_flag<O>("foreach", true),  // schedulefree's implementation choice (torch._foreach_*)
      flag("maximize", &O::maximize).keyword_only().not_in_reference(),
      real("lr_max", &O::lr_max, Bound::nonneg).carried(),
      real("weight_sum", &O::weight_sum, Bound::nonneg).carried(),
      flag("train_mode", &O::train_mode).carried(),
  };
  static constexpr std::array slots{Slot<O>{"z", nullptr, nullptr, true}, Slot<O>{"exp_avg_sq"}};
  static constexpr std::array checks{
      Check<O>{"betas[0] must be > 0 (eval() moves the params by 1 - 1/beta1)", nullptr, &O::beta1}};
  static constexpr std::array<Variant, 0> variants{};
  static constexpr Mode<O> mode{&O::train_mode, "train", "eval",
                                "AdamWScheduleFree is not in train mode: call train() before step() (and "
                                "eval() before evaluating or saving the model)"};
};

struct SgdScheduleFreeOptions {
  double lr = 1.0, momentum = 0.9, weight_decay = 0.0, warmup_steps = 0.0, r = 0.0, weight_lr_power = 2.0;
  bool maximize = false;
  double lr_max = 0.0, weight_sum = 0.0;  // carried
  bool train_mode = false;               // carried: the params hold y (else x)
};
template <>
struct Declaration<SgdScheduleFreeOptions> {
  using O = SgdScheduleFreeOptions;
  static constexpr std::size_t parallel_min = 1u << 15;
  static constexpr const char* name = "SGDScheduleFree";
  static constexpr const char* options = "SgdScheduleFreeOptions";
  static constexpr const char* reference = "schedulefree";  // schedulefree 1.4.1
  static constexpr const char* summary =
      "Schedule-Free SGD: momentum, weight_decay at y, warmup_steps, r, weight_lr_power; train()/eval()";
  static constexpr const char* equations =
      "lr_t    = lr * step / warmup_steps  while step - 1 < warmup_steps, else lr\n"
      "lr_max  = max(lr_max, lr_t)\n"
      "w       = step^r * lr_max^weight_lr_power,  weight_sum += w\n"
      "c       = w / weight_sum                    (0 while weight_sum = 0)\n"
      "u       = ±grad + weight_decay * y\n"
      "y       = lerp(y, z, c) + lr_t * (momentum * (1 - c) - 1) * u\n"
      "z      -= lr_t * u\n"
      "train(): p = lerp(p, z, 1 - momentum)  (x to y);  eval(): p = lerp(p, z, 1 - 1/momentum)  (y to x)\n"
      "(p holds y while training, the average x after eval(); lr_max, weight_sum\n"
      "and train_mode are carried; float32 values are computed in double and\n"
      "rounded once when stored)\n";
  static constexpr bool torch_step_state = false;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("momentum", &O::momentum, Bound::unit_open),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      real("warmup_steps", &O::warmup_steps, Bound::nonneg),
      real("r", &O::r, Bound::nonneg),
      real("weight_lr_power", &O::weight_lr_power, Bound::nonneg),
      reference_flag<O>("foreach", true),  // schedulefree's implementation choice (torch._foreach_*)
      flag("maximize", &O::maximize).keyword_only().not_in_reference(),
      real("lr_max", &O::lr_max, Bound::nonneg).carried(),
      real("weight_sum", &O::weight_sum, Bound::nonneg).carried(),
      flag("train_mode", &O::train_mode).carried(),
  };
  static constexpr std::array slots{Slot<O>{"z", nullptr, nullptr, true}};
  static constexpr std::array checks{
      Check<O>{"momentum must be > 0 (eval() moves the params by 1 - 1/momentum)", nullptr, &O::momentum}};
  static constexpr std::array<Variant, 0> variants{};
  static constexpr Mode<O> mode{&O::train_mode, "train", "eval",
                                "SGDScheduleFree is not in train mode: call train() before step() (and "
                                "eval() before evaluating or saving the model)"};
};

// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"),
// after lion_pytorch.Lion (lion-pytorch 0.2.5; torch.optim has no Lion).
struct LionOptions {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.99, weight_decay = 0.0;
  bool decoupled_weight_decay = false, maximize = false;
  // The rate weight_decay is relative to with decoupled_weight_decay
  // (lion_pytorch's _init_lr): the decay of a step is then
  // lr * weight_decay / init_lr. Not a constructor argument: gs.Lion fills it
  // with its base rate at step 0, gradstep.torch.Lion with its constructor's
  // lr (as lion_pytorch does), gs.kernels.lion_step takes it by keyword.
  double init_lr = 0.0;
};
template <>
struct Declaration<LionOptions> {
  using O = LionOptions;
  static constexpr std::size_t parallel_min = 1u << 15;
  static constexpr const char* name = "Lion";
  static constexpr const char* reference = "lion_pytorch";
  static constexpr const char* options = "LionOptions";
  static constexpr const char* summary = "the sign of an interpolated momentum (Chen et al. 2023): betas, weight_decay";
  static constexpr const char* equations =
      "g  = ±grad\n"
      "wd = weight_decay / init_lr                      (decoupled_weight_decay)\n"
      "wd = weight_decay                                (otherwise)\n"
      "p *= 1 - lr * wd\n"
      "p -= lr * sign(beta1 * m + (1 - beta1) * g)      (sign(0) = sign(NaN) = 0, as torch.sign)\n"
      "m  = beta2 * m + (1 - beta2) * g\n"
      "(m: exp_avg; init_lr: gs.Lion's base rate at step 0, before plateau scaling,\n"
      "set again whenever its lr is; gradstep.torch.Lion's constructor lr, as lion_pytorch's)\n";
  static constexpr bool torch_step_state = false;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("beta1", &O::beta1, Bound::unit_closed).in("betas"),
      real("beta2", &O::beta2, Bound::unit_closed).in("betas"),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      // lion_pytorch's switch to its Triton (CUDA) kernel.
      reference_flag<O>("use_triton", false).on_optimizer(),
      flag("decoupled_weight_decay", &O::decoupled_weight_decay).on_optimizer(),
      flag("maximize", &O::maximize).keyword_only().not_in_reference(),
      real("init_lr", &O::init_lr, Bound::nonneg).fixed().filled_with_rate_at_start(),
  };
  static constexpr std::array slots{Slot<O>{"exp_avg"}};
  static constexpr std::array checks{
      Check<O>{"with decoupled_weight_decay, init_lr (the rate at step 0, which weight_decay is relative to) "
               "must be > 0",
               &O::decoupled_weight_decay, &O::init_lr}};
  static constexpr std::array<Variant, 0> variants{};
};

// Adafactor (Shazeer & Stern 2018) as torch.optim.Adafactor computes it
// (torch 2.13, foreach=False): the second moment of a matrix (the last two
// dims of a param of 2 or more) kept factored, one value per row and per
// column; of a 0-d or 1-d param, in full.
struct AdafactorOptions {
  double lr = 1e-2, beta2_decay = -0.8;
  double eps1 = __builtin_nan("");  // None: the param dtype's machine epsilon (torch.finfo(dtype).eps)
  double eps2 = 1e-3, d = 1.0, weight_decay = 0.0;
  bool maximize = false;
};
template <>
struct Declaration<AdafactorOptions> {
  using O = AdafactorOptions;
  static constexpr std::size_t parallel_min = 1u << 14;
  // Per chunk: the sum of p^2 and of the new row_var of the rows it owns (stats
  // pass), the sum of u^2 (norm pass).
  static constexpr int partial_sums = 3;
  static constexpr bool per_tensor = true;
  static constexpr const char* name = "Adafactor";
  static constexpr const char* reference = "torch.optim";
  static constexpr const char* options = "AdafactorOptions";
  static constexpr const char* summary = "factored second moments (row and column means), relative step size, update clipping";
  static constexpr const char* equations =
      "g      = ±grad\n"
      "w      = step^beta2_decay;  rho = min(lr, 1 / sqrt(step))\n"
      "alpha  = max(eps2, ||p|| / sqrt(numel)) * rho    (p before the decay)\n"
      "p     *= 1 - lr * weight_decay\n"
      "matrix (dim >= 2; rows R, cols C: the last two dims, per batch of the others):\n"
      "  row_var = lerp(row_var, mean(g^2 over C), w);  col_var = lerp(col_var, mean(g^2 over R), w)\n"
      "  var     = row_var * col_var / max(mean(row_var over R), eps1)\n"
      "otherwise (0-d, 1-d):  variance = lerp(variance, g * g, w);  var = variance\n"
      "u      = g / sqrt(max(var, eps1^2))\n"
      "p     -= alpha / max(1, ||u|| / (sqrt(numel) * d)) * u\n"
      "(eps = (eps1, eps2), eps1 None: the dtype's machine epsilon; row_var has torch's shape\n"
      "(..., R, 1), col_var (..., 1, C); norms and means are per tensor, summed in double in a\n"
      "fixed order)\n";
  static constexpr bool torch_step_state = true;
  static constexpr std::array fields{
      real("lr", &O::lr, Bound::nonneg),
      real("beta2_decay", &O::beta2_decay, Bound::nonpos),
      real("eps1", &O::eps1, Bound::nonneg).in("eps").or_none(__builtin_nan("")),
      real("eps2", &O::eps2, Bound::nonneg).in("eps"),
      real("d", &O::d, Bound::at_least_one),
      real("weight_decay", &O::weight_decay, Bound::nonneg),
      flag("maximize", &O::maximize).keyword_only(),
  };
  static constexpr std::array slots{Slot<O>{"row_var"}.sized(Extent::rows), Slot<O>{"col_var"}.sized(Extent::cols),
                                    Slot<O>{"variance"}.sized(Extent::vector)};
  static constexpr std::array<Check<O>, 0> checks{};
  static constexpr std::array<Variant, 0> variants{};
};

// Every declared optimizer, once. Code generic over them (validation,
// TensorSet::step, the kernel table, the bindings) expands this list, so an
// optimizer is added here and nowhere else in C++ but its kernel file.
#define GRADSTEP_OPTIMIZERS(X) \
  X(SgdOptions)                \
  X(AdagradOptions)            \
  X(AdadeltaOptions)           \
  X(RmspropOptions)            \
  X(AdamOptions)                \
  X(AdamaxOptions)              \
  X(RadamOptions)               \
  X(NadamOptions)               \
  X(ProdigyOptions)             \
  X(DadaptAdamOptions)          \
  X(DadaptSgdOptions)           \
  X(LambOptions)                \
  X(AdamwScheduleFreeOptions)   \
  X(SgdScheduleFreeOptions)     \
  X(LionOptions)                \
  X(AdafactorOptions)

template <class... Options>
struct OptionsList {};
namespace detail {
template <class Sentinel, class... Options>
struct AfterSentinel {
  using type = OptionsList<Options...>;
};
#define GRADSTEP_DETAIL_COMMA_THEN(O) , O
}  // namespace detail
// The same list as a type, for templates.
using AllOptions = detail::AfterSentinel<void GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_COMMA_THEN)>::type;

// validate: throw std::invalid_argument naming the offending option (torch's
// names; a grouped field by its place in the group, "betas[0]"): each real
// field within its bound, then each cross-field check.
// state_mask: bit i is set when an optimizer with these options uses state slot i.
// state_extents: each slot's extent (strides read from the options).
#define GRADSTEP_DETAIL_CHECKS(O) \
  void validate(const O&);        \
  unsigned state_mask(const O&);  \
  SlotExtents state_extents(const O&);
GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_CHECKS)

// Throw std::invalid_argument unless value lies within bound ("name must be
// <rule>, got value"); the rule's words are bound_rule(bound).
void check_bound(const char* name, Bound bound, double value);
const char* bound_rule(Bound bound);

// Safeguards applied to a whole step (both off by default, as in torch).
struct StepControl {
  // A step whose gradients hold a NaN or an infinity changes nothing: no
  // param, no state, and the caller should not count it as a step.
  bool skip_nonfinite = false;
  // > 0: scale every gradient by min(1, max_grad_norm / (norm + 1e-6)), where
  // norm is the L2 norm over all gradients (torch.nn.utils.clip_grad_norm_).
  double max_grad_norm = 0.0;
  // How bf16/f16 params are stored (nearest for f32/f64 params, always) and
  // the seed of stochastic rounding's random bits: element i of tensor t in
  // step k rounds with bits keyed by (seed, k, t, i), so the same on every
  // ISA target and thread count, and a resumed run rounds as the original.
  Rounding rounding = Rounding::nearest;
  std::uint64_t seed = 0;
};

// Most fields of Kind::carried any declaration has.
constexpr std::size_t kMaxCarried = 8;

struct StepReport {
  bool found_inf = false;  // a gradient held NaN or inf (checked only when asked)
  bool skipped = false;    // found_inf with skip_nonfinite: nothing was written
  double grad_norm = -1.0; // global L2 norm of the gradients; -1 when not computed
  // The new values of the options' carried fields (Kind::carried), in
  // declaration order, for the options of the next step (a flag as 0 or 1).
  // A skipped step leaves them as they were given.
  double carried[kMaxCarried] = {};
};

// Options with their carried fields set from a step's report.
template <class Options>
Options with_carried(Options o, const StepReport& report) {
  std::size_t i = 0;
  for (const auto& f : Declaration<Options>::fields) {
    if (f.kind != Kind::carried) continue;
    if (f.real != nullptr)
      o.*f.real = report.carried[i++];
    else
      o.*f.flag = report.carried[i++] != 0.0;
  }
  return o;
}

// A list of tensors whose params and states stay in place from step to step;
// only the gradient pointers change. Everything about the params and states
// is checked once, at construction; set_grads checks only new grad pointers,
// in O(log n) each, so a step over many tensors costs no per-step validation.
// Large steps are shared between the calling thread and a worker pool
// (num_threads() at the time of the step, in total); results are
// bit-identical for any thread count.
class TensorSet {
 public:
  // Checks: known dtype, a matrix shape (batch, rows, cols) that is none or
  // holds size elements, non-null param and every state in slot_mask that
  // has elements (slot_size of its extent), and no written buffer (param,
  // state, each of its own size) overlapping any other buffer. Grads may be
  // null here (then set_grads must come before the first step). A step's
  // options must declare the same extents (state_extents) for the slots they use.
  TensorSet(const TensorView* tensors, std::size_t count, unsigned slot_mask, const SlotExtents& extents = {});
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
#define GRADSTEP_DETAIL_STEP(O) StepReport step(const O&, std::int64_t step, const StepControl& control = {}) const;
  GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_STEP)
#undef GRADSTEP_DETAIL_STEP

  // One update over param groups whose options differ, for an optimizer whose
  // declaration says `group_options = true` (its kernel reads the per-group
  // options it reduces across groups with, as the reference: Prodigy's
  // weight_decay, eps, ...): tensor t steps with groups[group_of[t]] where the
  // kernel reads per-group options, and with `o` (the carried values, the
  // options the reference reads from its first group, the step's rate)
  // elsewhere. Every options struct is validated first; std::logic_error for
  // an optimizer whose kernel has no per-group options.
#define GRADSTEP_DETAIL_STEP_GROUPS(O)                                                                       \
  StepReport step_groups(const O& o, const O* groups, std::size_t group_count, const std::uint32_t* group_of, \
                         std::int64_t step, const StepControl& control = {}) const;
  GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_STEP_GROUPS)
#undef GRADSTEP_DETAIL_STEP_GROUPS

  // For an optimizer with a Mode (declaration.hpp): the options in mode `on`
  // (true: the Mode's `on` state), after the kernel's pass that moves every
  // param there; nothing is done when `o` is in that mode already. Options
  // are validated first; std::logic_error for an optimizer without a mode.
#define GRADSTEP_DETAIL_SWITCH(O) O switch_mode(const O& o, bool on) const;
  GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_SWITCH)
#undef GRADSTEP_DETAIL_SWITCH

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
  TensorSet set(tensors, count, state_mask(options), state_extents(options));
  return set.step(options, step, control);
}

}  // namespace gradstep
