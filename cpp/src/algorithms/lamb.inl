// LAMB: the update equations are Declaration<LambOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.Lamb); timm's Lamb,
// its single-tensor path (timm's default on the CPU).
//
// The trust ratio needs two norms per tensor before any param is written,
// so a step is up to four passes over the plan, each on the step's threads:
//   clip     (max_grad_norm > 0) the sum of grad^2, for the global clip;
//   moments  m and v updated and stored; per chunk the sum of p^2 (p after a
//            decoupled decay) and the sum of u^2, or with caution the count
//            of elements where u * g > 0;
//   norm     (caution and a trust ratio) the sum of u^2, u masked by caution;
//   apply    p += step_size(tensor) * u.
// Later passes recompute u from the stored m and v with the same operations
// (lamb_range, one body for every pass), so they use the very bits the
// moments pass reduced: cheaper than storing u. Sums are lane_sums in double,
// added up in chunk order (partial_totals): the same bits for every ISA
// target and thread count. Without a trust ratio or caution, one pass.
//
// u is computed as update_scale * r with r = m / (sqrt(v) + eps * sqrt(bc2))
// and update_scale = sqrt(bc2) / bc1 (one division and one square root per
// element, as adam.inl); the L2 decay is added to r as weight_decay /
// update_scale * p, and ||u|| = update_scale * ||r||. As in adam.inl, a
// float32 param's decoupled decay and update are done in double and rounded
// once.
//
// A step over param groups whose options differ (TensorSet::step_groups)
// takes every option but max_grad_norm from each tensor's group, as timm
// steps each group with its own (the clip is global, from the step's
// options); the passes run when any group needs them.

// The per-step constants, in double.
struct LambStep {
  Lerp m_lerp;          // m = lerp(m, g, beta3) when beta3 == 1 - beta1 (timm's test; grad_averaging)
  double beta1, beta3;  // else m = beta1 * m + beta3 * g
  double eps_scaled;    // eps * sqrt(bc2)
  double update_scale;  // sqrt(bc2) / bc1
  double wd_scaled;     // weight_decay / update_scale: L2 decay added to r
  double param_scale;   // 1 - lr * weight_decay with decoupled_decay (lr^2 / max_lr corrected), else 1
  double grad_scale;    // ±1 (maximize) divided by the clipping factor
};

enum LambPass : int { kMoments, kNorm, kApply, kFused };  // kFused: moments and apply, no sums

// The constants of a step with options o (the clipping factor aside: grad_scale is the sign).
inline LambStep lamb_constants(const LambOptions& o, double step, double grad_scale) {
  const double bc1 = o.bias_correction ? 1.0 - __builtin_pow(o.beta1, step) : 1.0;
  const double bc2_sqrt = o.bias_correction ? __builtin_sqrt(1.0 - __builtin_pow(o.beta2, step)) : 1.0;
  const double beta3 = o.grad_averaging ? 1.0 - o.beta1 : 1.0;
  LambStep c{lerp_weight(beta3), o.beta1, beta3, o.eps * bc2_sqrt, bc2_sqrt / bc1, 0.0, 1.0, grad_scale};
  c.wd_scaled = o.weight_decay / c.update_scale;
  if (o.decoupled_decay && o.weight_decay != 0.0) {
    const double decay_rate = o.corrected_weight_decay ? o.lr * o.lr / o.max_lr : o.lr;
    c.param_scale = 1.0 - decay_rate * o.weight_decay;
  }
  return c;
}

// The options and constants of tensor t: its group's in a step over groups, else the step's.
struct LambTensor {
  const LambOptions& o;
  LambStep c;
};
inline LambTensor lamb_tensor(const LambOptions& o, const LambStep& c, const detail::Job& job, const TensorView& t) {
  const LambOptions& g = group_options_of(o, job, t);
  if (&g == &o) return {o, c};
  LambStep cg = lamb_constants(g, double(job.step), 1.0);
  cg.grad_scale = c.grad_scale;  // the sign and the global clip
  return {g, cg};
}

// The elements [begin, end) of one tensor in one pass. sums: the chunk's
// partials (moments: p^2 and u^2 or the caution count; norm: u^2 in sums[0]).
template <class T, int kPass, bool kLerp, bool kCaution, bool kL2>
void lamb_range(const TensorView& t, std::size_t begin, std::size_t end, const LambOptions& o, const LambStep& c,
                double caution_scale, double step_size, double* sums) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict m = state_of<T>(t, 0);
  T* __restrict v = state_of<T>(t, 1);
  const T grad_scale = T(c.grad_scale), m_coeff = T(c.m_lerp.coeff), beta1 = T(c.beta1), beta3 = T(c.beta3);
  const bool m_from_end = c.m_lerp.from_end;
  const T beta2 = T(o.beta2), one_minus_beta2 = T(1.0 - o.beta2);
  const T eps = T(c.eps_scaled), wd = T(c.wd_scaled), cautious = T(caution_scale);
  // The moments pass first updates m and v over the range in a loop of its
  // own, then reduces from the stored values (the same bits): a reduction
  // whose terms also store is not vectorized by GCC in every instantiation
  // (LAMB's L2 case ran scalar, 3.6x slower).
  constexpr bool kUpdates = kPass == kFused;
  if constexpr (kPass == kMoments) {
    GRADSTEP_INDEPENDENT_ITERATIONS
    for (std::size_t i = begin; i < end; ++i) {
      const T gi = grad_scale * g[i];
      m[i] = kLerp ? lerp(m[i], gi, m_from_end, m_coeff) : m[i] * beta1 + beta3 * gi;
      v[i] = v[i] * beta2 + one_minus_beta2 * gi * gi;
    }
  }
  // r of element i (the update before the trust ratio, over update_scale),
  // its p after a decoupled decay, and whether caution keeps it.
  auto element = [&](std::size_t i, double& decayed, bool& agrees) {
    const T gi = grad_scale * g[i];
    T mi = m[i], vi = v[i];
    if (kUpdates) {
      mi = kLerp ? lerp(mi, gi, m_from_end, m_coeff) : mi * beta1 + beta3 * gi;
      vi = vi * beta2 + one_minus_beta2 * gi * gi;
      m[i] = mi;
      v[i] = vi;
    }
    T r = mi / (sqrt_(vi) + eps);
    agrees = r * gi > T(0);
    // The moments pass only counts: the caution scale is not known yet.
    if (kCaution && kPass != kMoments) r = r * (agrees ? cautious : T(0));
    decayed = double(p[i]) * c.param_scale;
    if (kL2) r = r + wd * p[i];
    return r;
  };
  if constexpr (kPass == kMoments) {
    lane_sums<2>(begin, end, sums, [&](std::size_t i, double* x) {
      double decayed;
      bool agrees;
      const double r = double(element(i, decayed, agrees));
      x[0] = decayed * decayed;
      x[1] = kCaution ? (agrees ? 1.0 : 0.0) : r * r;
    });
  } else if constexpr (kPass == kNorm) {
    lane_sums<1>(begin, end, sums, [&](std::size_t i, double* x) {
      double decayed;
      bool agrees;
      const double r = double(element(i, decayed, agrees));
      x[0] = r * r;
    });
  } else {
    GRADSTEP_INDEPENDENT_ITERATIONS
    for (std::size_t i = begin; i < end; ++i) {
      double decayed;
      bool agrees;
      const double r = double(element(i, decayed, agrees));
      p[i] = T(decayed + step_size * r);
    }
  }
}

// One pass over chunks [first, last), each with its tensor's scales.
template <int kPass, class Scales>
void lamb_pass(const LambOptions& o, const LambStep& c, const detail::Job& job, const detail::Passes& passes,
               std::size_t first, std::size_t last, Scales&& scales_of) {
  constexpr std::size_t K = Declaration<LambOptions>::partial_sums;
  for_each_indexed_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e,
                                               std::size_t chunk) {
    using T = std::remove_pointer_t<decltype(type)>;
    const LambTensor x = lamb_tensor(o, c, job, t);
    const bool l2 = !x.o.decoupled_decay && x.o.weight_decay != 0.0;
    double caution_scale = 1.0, step_size = 0.0;
    scales_of(job.chunks[chunk].tensor, t.size, caution_scale, step_size);
    double* sums = passes.partials + chunk * K + (kPass == kNorm ? 2 : 0);
    with_flag(x.c.beta3 == 1.0 - x.c.beta1, [&](auto lerp_f) {
      with_flag(x.o.caution, [&](auto caution_f) {
        with_flag(l2, [&](auto l2_f) {
          lamb_range<T, kPass, lerp_f.value, caution_f.value, l2_f.value>(t, b, e, x.o, x.c, caution_scale,
                                                                           step_size, sums);
        });
      });
    });
  });
}

void step(const LambOptions& o, const detail::Job& job, const detail::Passes& passes, StepReport& report) {
  constexpr int K = Declaration<LambOptions>::partial_sums;
  LambStep c = lamb_constants(o, double(job.step), job.grad_scale);
  double total[K];

  if (o.max_grad_norm > 0.0) {
    // timm: grad / clamp(norm / max_grad_norm, min=1), the norm over every
    // grad of the set; a NaN norm stays NaN (so does every update, as in timm).
    for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
      for_each_indexed_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e,
                                                   std::size_t chunk) {
        using T = std::remove_pointer_t<decltype(type)>;
        passes.partials[chunk * K] = grad_stats_range(grad_of<T>(t), b, e).sum_squares;
      });
    });
    partial_totals<K>(job, passes, total);
    const double norm = __builtin_sqrt(total[0]) * (job.grad_scale < 0 ? -job.grad_scale : job.grad_scale);
    if (report.grad_norm < 0) report.grad_norm = norm;
    double clip = norm / o.max_grad_norm;
    if (clip < 1.0) clip = 1.0;
    c.grad_scale /= clip;
  }

  // Which passes run: those any tensor's options need.
  bool any_trust = false, any_caution = false, any_caution_trust = false;
  for (std::size_t t = 0; t < passes.tensor_count; ++t) {
    const LambOptions& g = group_options_of(o, job, job.tensors[t]);
    const bool trust = g.weight_decay != 0.0 || g.always_adapt;
    any_trust = any_trust || trust;
    any_caution = any_caution || g.caution;
    any_caution_trust = any_caution_trust || (g.caution && trust);
    if (job.group_options == nullptr) break;  // one set of options
  }
  const auto no_scales = [&](std::size_t tensor, std::size_t, double&, double& step_size) {
    const LambTensor x = lamb_tensor(o, c, job, job.tensors[tensor]);
    step_size = -x.o.lr * x.c.update_scale;
  };
  if (!any_trust && !any_caution) {
    for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
      lamb_pass<kFused>(o, c, job, passes, first, last, no_scales);
    });
    return;
  }
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    lamb_pass<kMoments>(o, c, job, passes, first, last, no_scales);
  });
  partial_totals<K>(job, passes, total, passes.per_tensor);
  // A tensor's scales from its totals: the same numbers for each of its chunks.
  // (The norm pass reads only the caution scale; its step size is not yet known.)
  const auto scales = [&](std::size_t tensor, std::size_t size, double& caution_scale, double& step_size) {
    const double* sums = passes.per_tensor + tensor * K;
    const LambTensor x = lamb_tensor(o, c, job, job.tensors[tensor]);
    const bool trust = x.o.weight_decay != 0.0 || x.o.always_adapt;
    if (x.o.caution) {
      double mean = sums[1] / double(size);
      if (mean < 1e-3) mean = 1e-3;
      caution_scale = 1.0 / mean;
    }
    double ratio = 1.0;
    if (trust) {
      // timm: where(||p|| > 0, where(||u|| > 0, ||p|| / ||u||, 1), 1), clamped to <= 1 with trust_clip.
      const double p_norm = __builtin_sqrt(sums[0]);
      const double u_norm = x.c.update_scale * __builtin_sqrt(x.o.caution ? sums[2] : sums[1]);
      if (p_norm > 0.0 && u_norm > 0.0) ratio = p_norm / u_norm;
      if (x.o.trust_clip && ratio > 1.0) ratio = 1.0;
    }
    step_size = -x.o.lr * x.c.update_scale * ratio;
  };
  if (any_caution_trust) {
    for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
      lamb_pass<kNorm>(o, c, job, passes, first, last, scales);
    });
    partial_totals<K>(job, passes, total, passes.per_tensor);
  }
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    lamb_pass<kApply>(o, c, job, passes, first, last, scales);
  });
}
