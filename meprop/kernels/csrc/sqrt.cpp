// meprop::sqrt_skipping_zeros and an optional CPU kernel for aten::sqrt built on it.
//
// torch's CPU sqrt of float32/float64 (MKL builds) runs MKL's vector sqrt (VML). VML sends
// every element that is zero (or denormal) through a per-element rare-case routine, which
// costs several times a regular element; a vector of mixed zeros and values costs more still
// (branch misses). torch.optim's Adam, AdamW, RMSprop and Adagrad (for-loop and foreach
// implementations) take the sqrt of their second moments every step, and a meProp weight
// gradient leaves many of those exactly zero (rows and entries no example kept yet).
//
// Here a tensor is first scanned for zeros (a vectorised pass over the bits, stopping at the
// first zero); without any, torch's own CPU kernel (at::cpu::sqrt*, the structured kernel,
// never through the dispatcher) runs on it exactly as it would have. With zeros, a copy with
// every zero replaced by 1 goes through the same kernel in one call, and the zeros are put
// back (sqrt(+-0) = +-0). Each element's result is computed by the same routine as before,
// independently of its neighbours, so the result is torch's bit for bit; meprop.fast_sqrt
// checks this on a probe before installing the kernel.
#include "common.h"

#include <ATen/CPUFunctions.h>
#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <memory>
#include <mutex>

namespace meprop {
namespace detail {
namespace {

constexpr int64_t kGrain = 32768;    // elements per thread at least (torch's own grain size)
constexpr int64_t kScan = 2048;      // elements scanned between checks for a zero found elsewhere
constexpr int64_t kMinNumel = 4096;  // smaller tensors go straight to torch's kernel

// The unsigned integer of T's width: zero tests on the bits (+-0: every bit but the sign clear)
// vectorise, where a floating compare (NaN-aware) stays scalar.
template <typename T>
using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

// Loop bodies on the bits (integer compares and selects vectorise; a count, not a bool
// reduction, so that GCC vectorises the test), instantiated per width in the cloned
// functions below.
template <typename U>
MEPROP_INLINE int64_t count_zeros_body(const U* in, int64_t n) {
  std::conditional_t<sizeof(U) == 4, int32_t, int64_t> count = 0;
  for (int64_t i = 0; i < n; ++i) count += U(in[i] << 1) == 0;
  return count;
}

template <typename U>
MEPROP_INLINE void replace_zeros_body(const U* in, U* staging, int64_t n, U one) {
  for (int64_t i = 0; i < n; ++i) staging[i] = U(in[i] << 1) == 0 ? one : in[i];
}

template <typename U>
MEPROP_INLINE void restore_zeros_body(const U* in, const U* staging, U* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {  // sqrt(+-0) = +-0: the input's own bits
    const U x = in[i];
    out[i] = U(x << 1) == 0 ? x : staging[i];
  }
}

MEPROP_CLONES int64_t count_zeros(const uint32_t* in, int64_t n) { return count_zeros_body(in, n); }
MEPROP_CLONES int64_t count_zeros(const uint64_t* in, int64_t n) { return count_zeros_body(in, n); }
MEPROP_CLONES void replace_zeros(const uint32_t* in, uint32_t* s, int64_t n, uint32_t one) {
  replace_zeros_body(in, s, n, one);
}
MEPROP_CLONES void replace_zeros(const uint64_t* in, uint64_t* s, int64_t n, uint64_t one) {
  replace_zeros_body(in, s, n, one);
}
MEPROP_CLONES void restore_zeros(const uint32_t* in, const uint32_t* s, uint32_t* out, int64_t n) {
  restore_zeros_body(in, s, out, n);
}
MEPROP_CLONES void restore_zeros(const uint64_t* in, const uint64_t* s, uint64_t* out, int64_t n) {
  restore_zeros_body(in, s, out, n);
}

// Whether in[0, numel) holds a +-0; every thread stops at its next check once one is found.
template <typename U>
bool has_zero(const U* in, int64_t numel) {
  std::atomic<bool> found{false};
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end && !found.load(std::memory_order_relaxed); s += kScan) {
      if (count_zeros(in + s, std::min(kScan, end - s)) != 0) found.store(true, std::memory_order_relaxed);
    }
  });
  return found.load();
}

// out = sqrt(in) for an input holding zeros: staging = in with zeros -> 1 (staging is out when
// out is not in, else a fresh buffer), torch's kernel on staging in place, zeros put back.
template <typename T>
void sqrt_with_zeros(const T* in, T* out, int64_t numel, at::TensorOptions opts) {
  using U = Bits<T>;
  at::Tensor buffer;
  T* staging = out;
  if (static_cast<const T*>(out) == in) {
    buffer = at::empty({numel}, opts);
    staging = buffer.data_ptr<T>();
  }
  const auto* in_bits = reinterpret_cast<const U*>(in);
  auto* staging_bits = reinterpret_cast<U*>(staging);
  const T one = T(1);
  U one_bits;
  std::memcpy(&one_bits, &one, sizeof(T));
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    replace_zeros(in_bits + begin, staging_bits + begin, end - begin, one_bits);
  });
  at::Tensor view = at::from_blob(staging, {numel}, opts);
  at::cpu::sqrt_out(view, view);
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    restore_zeros(in_bits + begin, staging_bits + begin, reinterpret_cast<U*>(out) + begin, end - begin);
  });
}

// The zero-skipping path applies: a dense, contiguous CPU float32/float64 tensor of some size.
bool applies(const at::Tensor& t) {
  const auto dtype = t.scalar_type();
  return t.layout() == at::kStrided && t.device().is_cpu() && (dtype == at::kFloat || dtype == at::kDouble) &&
         t.is_contiguous() && t.numel() >= kMinNumel && !t.is_neg() && !t.is_conj();
}

// Whether `t` (for which applies() holds) holds a +-0.
bool holds_zero(const at::Tensor& t) {
  if (t.scalar_type() == at::kFloat) return has_zero(static_cast<const uint32_t*>(t.const_data_ptr()), t.numel());
  return has_zero(static_cast<const uint64_t*>(t.const_data_ptr()), t.numel());
}

// out = sqrt(self) for a `self` holding zeros; out contiguous, same dtype and numel (may be self).
void sqrt_into(const at::Tensor& self, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(self.scalar_type(), "meprop_sqrt", [&] {
    sqrt_with_zeros(self.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), self.numel(),
                    self.options().device(at::kCPU));
  });
}

// Each entry point hands a tensor without zeros (or one the path does not apply to) to
// torch's kernel unchanged: the only cost added there is the scan.
at::Tensor sqrt_skipping_zeros(const at::Tensor& self) {
  if (!applies(self) || !holds_zero(self)) return at::cpu::sqrt(self);
  at::Tensor out = at::empty_like(self);
  sqrt_into(self, out);
  return out;
}

at::Tensor& sqrt_inplace(at::Tensor& self) {
  if (!applies(self) || !holds_zero(self)) return at::cpu::sqrt_(self);
  sqrt_into(self, self);
  return self;
}

at::Tensor& sqrt_out(const at::Tensor& self, at::Tensor& out) {
  const bool plain = applies(self) && out.layout() == at::kStrided && out.device().is_cpu() &&
                     out.scalar_type() == self.scalar_type() && out.is_contiguous() &&
                     out.sizes().equals(self.sizes()) &&
                     (out.is_same(self) || at::get_overlap_status(out, self) == at::MemOverlapStatus::No);
  // resizing, casting and overlap checks, and tensors without zeros: torch's
  if (!plain || !holds_zero(self)) return at::cpu::sqrt_out(out, self);
  sqrt_into(self, out);
  return out;
}

std::mutex install_mutex;
std::unique_ptr<torch::Library> override_library;

// The aten::sqrt override is registered while `on` (the previous CPU kernel comes back when it
// is dropped). Returns whether it is registered now.
bool set_sqrt_override(bool on) {
  std::lock_guard<std::mutex> lock(install_mutex);
  if (on && !override_library) {
    struct Quiet : c10::WarningHandler {
      void process(const c10::Warning&) override {}  // "overriding a previously registered kernel"
    } quiet;
    c10::WarningUtils::WarningHandlerGuard guard(&quiet);
    auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "aten", c10::DispatchKey::CPU,
                                                __FILE__, __LINE__);
    lib->impl("sqrt", TORCH_FN(sqrt_skipping_zeros));
    lib->impl("sqrt_", TORCH_FN(sqrt_inplace));
    lib->impl("sqrt.out", TORCH_FN(sqrt_out));
    override_library = std::move(lib);
  } else if (!on && override_library) {
    override_library.reset();
  }
  return static_cast<bool>(override_library);
}

bool sqrt_override_active() {
  std::lock_guard<std::mutex> lock(install_mutex);
  return static_cast<bool>(override_library);
}

}  // namespace
}  // namespace detail
}  // namespace meprop

TORCH_LIBRARY_FRAGMENT(meprop, m) {
  m.def("sqrt_skipping_zeros(Tensor self) -> Tensor");
  m.def("set_sqrt_override(bool on) -> bool", TORCH_FN(meprop::detail::set_sqrt_override));
  m.def("sqrt_override_active() -> bool", TORCH_FN(meprop::detail::sqrt_override_active));
}

TORCH_LIBRARY_IMPL(meprop, CPU, m) {
  m.impl("sqrt_skipping_zeros", TORCH_FN(meprop::detail::sqrt_skipping_zeros));
}
