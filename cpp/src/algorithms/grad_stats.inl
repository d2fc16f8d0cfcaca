// Gradient statistics for clipping and the non-finite check: the sum of
// squares (in double) and whether any element is NaN or infinite.
//
// The sum is taken in a fixed order on every target: 16 running sums, one per
// residue of the index mod 16, then folded pairwise. A 16-wide block is a
// whole number of vectors for SSE2, AVX2 and AVX-512 alike, so each target
// computes the very same additions and the bits agree (a plain `sum += x*x`
// loop would be reassociated differently per vector width, or not vectorized).
// x * 0 is 0 for every finite x and NaN for NaN or infinity, so adding those
// products flags a non-finite element without a branch.

// load(i): element i of the gradient, as double.
template <class Load>
detail::GradStats grad_stats_loaded(Load&& load, std::size_t begin, std::size_t end) {
  constexpr int kLanes = 16;
  double sums[kLanes] = {}, flags[kLanes] = {};
  std::size_t i = begin;
  for (; i + kLanes <= end; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double x = load(i + j);
      sums[j] += x * x;
      flags[j] += x * 0.0;
    }
  for (int j = 0; i < end; ++i, ++j) {
    const double x = load(i);
    sums[j] += x * x;
    flags[j] += x * 0.0;
  }
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int j = 0; j < width; ++j) {
      sums[j] += sums[j + width];
      flags[j] += flags[j + width];
    }
  return {sums[0], flags[0]};
}

template <class T>
detail::GradStats grad_stats_range(const T* __restrict g, std::size_t begin, std::size_t end) {
  return grad_stats_loaded([g](std::size_t i) { return double(g[i]); }, begin, end);
}

void grad_stats_chunks(const detail::Job& job, std::size_t first, std::size_t last, detail::GradStats* out) {
  for (std::size_t c = first; c < last; ++c) {
    const detail::Chunk& ch = job.chunks[c];
    const TensorView& t = job.tensors[ch.tensor];
    const auto* h = static_cast<const std::uint16_t*>(t.grad);
    switch (t.grad_dtype) {
      case DType::bf16:
        out[c] = grad_stats_loaded([h](std::size_t i) { return double(bf16_to_float(h[i])); }, ch.begin, ch.end);
        break;
      case DType::f16:
        out[c] = grad_stats_loaded([h](std::size_t i) { return double(f16_to_float(h[i])); }, ch.begin, ch.end);
        break;
      case DType::f64: out[c] = grad_stats_range(grad_of<double>(t), ch.begin, ch.end); break;
      default: out[c] = grad_stats_range(grad_of<float>(t), ch.begin, ch.end); break;
    }
  }
}
