// Adafactor: the update equations are Declaration<AdafactorOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.Adafactor);
// torch.optim.Adafactor's single-tensor step, its element operations in the
// element type as torch rounds them, its scalars (alpha, the clipping
// denominator) in double as its Python floats.
//
// A tensor needs its whole ||p|| before its step size, its new row and
// column variances before any u, and its whole ||u|| before any write of p,
// so a step is three passes over the plan, each on the step's threads:
//   stats  per chunk the sum of p^2 (lane_sums); a vector's variance lerped
//          element by element; of a matrix, the rows and the columns the
//          chunk owns (below): each one's mean of g^2, lerped into row_var /
//          col_var, and the sum of the new row_var it owns (a 2-d param's
//          mean(row_var) from the chunk totals; a batch of matrices sums each
//          matrix's row_var where it needs it);
//   norm   per chunk the sum of u^2;
//   apply  p = p * (1 - lr * weight_decay) - alpha / denom * u.
// u is recomputed from the stored variances in the norm and apply passes by
// the same operations (adafactor_range, one body for both), so apply uses
// the very bits the norm pass summed.
//
// Who reduces what is fixed by the plan's chunks, which are cut once per
// set and never depend on the thread count: a chunk [b, e) of a tensor of n
// elements owns the rows [b * R' / n, e * R' / n) and the column blocks
// [b * B' / n, e * B' / n) (R' = batch * rows, B' = batch * ceil(cols / 16),
// blocks of 16 adjacent columns; the products in 128 bits), so the rows and
// columns are shared among the chunks in proportion to their elements, and
// a big matrix is reduced by every thread. A row's sum is lane_sums over its
// cols elements (in order below 16); a column's sum adds its rows elements
// in row order, the 16 columns of a block side by side (each column its own
// running sum: vectorized across columns, each sum in the same order on
// every target). Rows narrower than 16 take the norm and apply passes in one
// loop over the chunk, counting row and column along (lanes by place in the
// chunk, mod 16). Chunk sums are added in chunk order (partial_totals).
// Hence the same bits for every ISA target and thread count.

struct AdafactorStep {
  Lerp w;             // lerp weight step^beta2_decay
  double decay;       // 1 - lr * weight_decay (1: none)
  double grad_scale;  // ±1 (maximize), times the safeguard's clipping factor
};

// torch.finfo(T).eps: eps1 = None.
template <class T>
inline double machine_eps() {
  return sizeof(T) == 4 ? 1.1920928955078125e-07 : 2.220446049250313e-16;
}

// The part of [0, count) chunk [b, e) of an n-element tensor owns.
inline void owned_part(std::size_t b, std::size_t e, std::size_t n, std::size_t count, std::size_t& lo,
                       std::size_t& hi) {
  lo = std::size_t((unsigned __int128)b * count / n);
  hi = std::size_t((unsigned __int128)e * count / n);
}

// Rows shorter than this are summed in order, element by element (lane_sums' fold
// would cost more than the row); columns are summed kAdafactorSide side by side.
constexpr std::size_t kAdafactorNarrow = 16;
constexpr std::size_t kAdafactorSide = 16;

// The stats pass over chunk [b, e) of one tensor; out[0] = the chunk's sum of p^2,
// out[2] = that of the new row_var of the rows it owns (a matrix's). A matrix's
// rows and columns reach outside the chunk: their grads are read by grad_at
// (with_grad_reader), from the tensor's own grad even when the chunk is staged.
template <class T, class GradAt>
void adafactor_stats(const TensorView& t, std::size_t b, std::size_t e, const AdafactorStep& c, double* out,
                     GradAt&& grad_at) {
  const T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  const T scale = T(c.grad_scale), w_coeff = T(c.w.coeff);
  const bool w_from_end = c.w.from_end;
  double sum;
  if (t.rows == 0) {
    T* __restrict v = state_of<T>(t, 2);
    lane_sums<1>(b, e, &sum, [&](std::size_t i, double* x) {
      const T gi = scale * g[i];
      v[i] = lerp(v[i], gi * gi, w_from_end, w_coeff);
      x[0] = double(p[i]) * double(p[i]);
    });
    out[0] = sum;
    return;
  }
  lane_sums<1>(b, e, &sum, [&](std::size_t i, double* x) { x[0] = double(p[i]) * double(p[i]); });
  out[0] = sum;
  const std::size_t R = t.rows, C = t.cols, n = t.size;
  T* __restrict row_var = state_of<T>(t, 0);
  T* __restrict col_var = state_of<T>(t, 1);
  std::size_t lo, hi;
  owned_part(b, e, n, t.batch * R, lo, hi);
  for (std::size_t q = lo; q < hi; ++q) {  // row q of the batch * R rows
    double row = 0.0;
    if (C < kAdafactorNarrow) {  // a few elements: in order
      for (std::size_t i = q * C; i < q * C + C; ++i) {
        const T gi = scale * grad_at(i);
        row += double(gi) * double(gi);
      }
    } else {
      lane_sums<1>(q * C, q * C + C, &row, [&](std::size_t i, double* x) {
        const T gi = scale * grad_at(i);
        x[0] = double(gi) * double(gi);
      });
    }
    row_var[q] = lerp(row_var[q], T(row / double(C)), w_from_end, w_coeff);
  }
  lane_sums<1>(lo, hi, out + 2, [&](std::size_t q, double* x) { x[0] = double(row_var[q]); });
  // Columns are owned in blocks of kAdafactorSide adjacent ones (a block's rows are read whole
  // cache lines at a time): block k of a batch's ceil(C / kAdafactorSide) blocks.
  const std::size_t blocks = (C + kAdafactorSide - 1) / kAdafactorSide;
  owned_part(b, e, n, t.batch * blocks, lo, hi);
  for (std::size_t k = lo; k < hi; ++k) {
    const std::size_t batch = k / blocks, c0 = (k % blocks) * kAdafactorSide;
    const std::size_t width = C - c0 < kAdafactorSide ? C - c0 : kAdafactorSide;
    const std::size_t j = batch * C + c0;  // its first column in col_var
    double acc[kAdafactorSide] = {};
    const std::size_t base = batch * R * C + c0;
    for (std::size_t r = 0; r < R; ++r) {
      const std::size_t row = base + r * C;
      for (std::size_t c = 0; c < width; ++c) {
        const T gi = scale * grad_at(row + c);
        acc[c] += double(gi) * double(gi);
      }
    }
    for (std::size_t k = 0; k < width; ++k)
      col_var[j + k] = lerp(col_var[j + k], T(acc[k] / double(R)), w_from_end, w_coeff);
  }
}

enum AdafactorPass : int { kAdafactorNorm, kAdafactorApply };

// u over chunk [b, e) of one tensor: the norm pass sums u^2 into *sum, the
// apply pass moves p by step_size * u (after the decay).
// rows_total: the sum of the tensor's row_var (its chunks' out[2] in chunk order), which
// gives a single matrix's mean; a batch of matrices sums each one's rows here.
template <class T, int kPass>
void adafactor_range(const TensorView& t, std::size_t b, std::size_t e, const AdafactorStep& c, double eps1_given,
                     double rows_total, double step_size, double* sum) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  const T scale = T(c.grad_scale);
  const double eps1 = eps1_given != eps1_given ? machine_eps<T>() : eps1_given;  // NaN: None
  const T eps1_t = T(eps1), eps1_sq = T(eps1 * eps1);
  const double decay = c.decay;
  // u of element i from its variance estimate.
  auto update = [&](std::size_t i, T var) {
    var = var < eps1_sq ? eps1_sq : var;  // clamp(min=): NaN stays NaN
    return T(1) / sqrt_(var) * (scale * g[i]);
  };
  auto segment = [&](std::size_t lo, std::size_t hi, auto&& var_of, double* part) {
    if constexpr (kPass == kAdafactorNorm) {
      lane_sums<1>(lo, hi, part, [&](std::size_t i, double* x) {
        const double u = double(update(i, var_of(i)));
        x[0] = u * u;
      });
    } else {
      GRADSTEP_INDEPENDENT_ITERATIONS
      for (std::size_t i = lo; i < hi; ++i) p[i] = T(double(p[i]) * decay + step_size * double(update(i, var_of(i))));
    }
  };
  double total = 0.0;
  if (t.rows == 0) {
    const T* __restrict v = state_of<T>(t, 2);
    segment(b, e, [&](std::size_t i) { return v[i]; }, &total);
  } else {
    const std::size_t R = t.rows, C = t.cols;
    const T* __restrict row_var = state_of<T>(t, 0);
    const T* __restrict col_var = state_of<T>(t, 1);
    std::size_t batch = std::size_t(-1);
    T mean = T(0);
    const auto batch_mean = [&](std::size_t of) {  // torch: row_var.mean(dim=-2).clamp(min=eps1)
      double rows_sum = rows_total;
      if (t.batch > 1)
        lane_sums<1>(of * R, of * R + R, &rows_sum, [&](std::size_t k, double* x) { x[0] = double(row_var[k]); });
      const T m = T(rows_sum / double(R));
      return m < eps1_t ? eps1_t : m;
    };
    if (C < kAdafactorNarrow) {
      // Narrow rows: one pass over the chunk with the row and column counted along (no
      // per-row call); the norm's lane is the element's place in the chunk, mod 16.
      std::size_t q = b / C, col = b % C;
      batch = q / R;
      mean = batch_mean(batch);
      double lanes[16] = {};
      for (std::size_t i = b; i < e; ++i) {
        const T u = update(i, row_var[q] * col_var[batch * C + col] / mean);
        if constexpr (kPass == kAdafactorNorm)
          lanes[(i - b) & 15] += double(u) * double(u);
        else
          p[i] = T(double(p[i]) * decay + step_size * double(u));
        if (++col == C) {
          col = 0;
          if (++q % R == 0 && i + 1 < e) mean = batch_mean(batch = q / R);
        }
      }
      for (int width = 8; width >= 1; width /= 2)
        for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
      if (sum != nullptr) *sum = lanes[0];
      return;
    }
    // Row by row: element i of row q has var row_var[q] * col_var[batch * C + i % C] / mean.
    for (std::size_t q = b / C; q * C < e; ++q) {
      const std::size_t lo = q * C > b ? q * C : b, hi = q * C + C < e ? q * C + C : e;
      if (q / R != batch) mean = batch_mean(batch = q / R);  // per matrix of the batch
      const T rv = row_var[q];
      const T* cv = col_var + batch * C;
      const std::size_t row_start = q * C;
      double part = 0.0;
      segment(lo, hi, [&](std::size_t i) { return rv * cv[i - row_start] / mean; }, &part);
      total += part;
    }
  }
  if (sum != nullptr) *sum = total;
}

void step(const AdafactorOptions& o, const detail::Job& job, const detail::Passes& passes, StepReport&) {
  constexpr int K = Declaration<AdafactorOptions>::partial_sums;
  const double step = double(job.step);
  AdafactorStep c{lerp_weight(__builtin_pow(step, o.beta2_decay)), 1.0, job.grad_scale};
  if (o.weight_decay != 0.0) c.decay = 1.0 - o.lr * o.weight_decay;
  const double rho = py_min(o.lr, 1.0 / __builtin_pow(step, 0.5));
  double total[K];

  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    for_each_indexed_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e,
                                                 std::size_t chunk) {
      using T = std::remove_pointer_t<decltype(type)>;
      with_grad_reader<T>(job.tensors[job.chunks[chunk].tensor], [&](auto grad_at) {
        adafactor_stats<T>(t, b, e, c, passes.partials + chunk * K, grad_at);
      });
    });
  });
  partial_totals<K>(job, passes, total, passes.per_tensor);
  // The totals of the stats pass, read by the next two passes (per_tensor is summed again below).
  const auto rows_total = [&](std::size_t chunk) { return passes.per_tensor[job.chunks[chunk].tensor * K + 2]; };
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    for_each_indexed_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e,
                                                 std::size_t chunk) {
      using T = std::remove_pointer_t<decltype(type)>;
      adafactor_range<T, kAdafactorNorm>(t, b, e, c, o.eps1, rows_total(chunk), 0.0, passes.partials + chunk * K + 1);
    });
  });
  partial_totals<K>(job, passes, total, passes.per_tensor);
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    for_each_indexed_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e,
                                                 std::size_t chunk) {
      using T = std::remove_pointer_t<decltype(type)>;
      const double* sums = passes.per_tensor + job.chunks[chunk].tensor * K;
      const double root_n = __builtin_pow(double(t.size), 0.5);
      const double alpha = py_max(o.eps2, __builtin_sqrt(sums[0]) / root_n) * rho;
      const double denom = py_max(1.0, __builtin_sqrt(sums[1]) / (root_n * o.d));
      adafactor_range<T, kAdafactorApply>(t, b, e, c, o.eps1, sums[2], -alpha / denom, nullptr);
    });
  });
}
