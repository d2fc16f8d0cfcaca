// The step of an optimizer whose update is one pass over the elements: its
// chunks() over the whole plan. Included after every algorithm, so that the
// unqualified call finds each optimizer's chunks(); an optimizer with a step()
// of its own (a non-template function, preferred by the kernel table's
// conversion) runs its passes itself.
template <class Options>
void step(const Options& o, const detail::Job& job, const detail::Passes& passes, StepReport&) {
  detail::Job one = job;
  one.one_pass = true;
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) { chunks(o, one, first, last); });
}

// The mode switch of an optimizer without a Mode: never called (the driver
// refuses a switch for it), there only to fill its kernel-table entry.
template <class Options>
void switch_mode(const Options&, bool, const detail::Job&, const detail::Passes&) {}
