// meprop::sqrt_skipping_zeros and an optional CPU kernel for aten::sqrt built on it.
//
// torch's CPU sqrt of float32/float64 (MKL builds) runs MKL's vector sqrt (VML). VML sends
// every element that is zero (or denormal) through a per-element rare-case routine, which
// costs several times a regular element; a vector of mixed zeros and values costs more still
// (branch misses). torch.optim's Adam, AdamW, RMSprop and Adagrad (for-loop and foreach
// implementations) take the sqrt of their second moments every step, and a meProp weight
// gradient leaves many of those exactly zero (rows and entries no example kept yet).
//
// Here a tensor is first sampled (64 evenly spaced elements): without a zero among them it
// goes to torch's own CPU kernel (at::cpu::sqrt*, the structured kernel, never through the
// dispatcher) exactly as before, so every other sqrt of the process costs 64 loads more.
// With a zero, it is processed in cache-sized chunks cut into runs (sqrt_chunk): a run without
// zeros goes to the routine torch's kernel runs on contiguous float32/float64 (MKL's
// vmsSqrt/vmdSqrt with torch's mode, VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE, found in
// libtorch_cpu; where torch has no MKL, torch's kernel on the whole chunk), a run of zeros is
// copied, and a run mixing both goes to the routine with its zeros replaced by 1 and the zeros
// put back (sqrt(+-0) = +-0). Each element's result is computed by the same
// routine as before, independently of its neighbours, so the result is torch's bit for bit;
// meprop.fast_sqrt checks this on a probe before installing the kernel.
#include "common.h"

#include <ATen/CPUFunctions.h>
#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include <memory>
#include <mutex>

namespace meprop {
namespace detail {
namespace {

constexpr int64_t kGrain = 32768;    // elements per thread at least (torch's own grain size)
constexpr int64_t kChunk = 4096;     // elements per chunk (16-32 KB: stays in L1/L2 between passes)
constexpr int64_t kSamples = 64;     // elements sampled for a zero before any pass
constexpr int64_t kMinNumel = 4096;  // smaller tensors go straight to torch's kernel
constexpr int64_t kBlock = 64;       // elements per block when a chunk is cut into runs
constexpr int64_t kMinStraight = 512;  // a shorter run of values between mixed blocks is staged

// MKL's vector sqrt as torch calls it (ATen/cpu/vml.h), weak: null where libtorch has no MKL.
// The length is passed as a 64-bit integer: right for LP64 (int, low half) and ILP64 MKL.
constexpr long long kVmlMode = 0x2 | 0x140000 | 0x100;  // VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE
}  // namespace
}  // namespace detail
}  // namespace meprop
extern "C" void vmsSqrt(int64_t n, const float* a, float* r, long long mode) __attribute__((weak));
extern "C" void vmdSqrt(int64_t n, const double* a, double* r, long long mode) __attribute__((weak));
namespace meprop {
namespace detail {
namespace {

bool have_vml() { return vmsSqrt != nullptr && vmdSqrt != nullptr; }
void vml_sqrt(const float* in, float* out, int64_t n) { vmsSqrt(n, in, out, kVmlMode); }
void vml_sqrt(const double* in, double* out, int64_t n) { vmdSqrt(n, in, out, kVmlMode); }

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

// Whether one of kSamples evenly spaced elements of in[0, numel) is +-0.
template <typename U>
bool sample_has_zero(const U* in, int64_t numel) {
  for (int64_t s = 0; s < kSamples; ++s) {
    if (U(in[s * (numel - 1) / (kSamples - 1)] << 1) == 0) return true;
  }
  return false;
}

// out[0, n) = sqrt(in[0, n)) by torch's routine (out may be in).
template <typename T>
void plain_sqrt(const T* in, T* out, int64_t n, at::TensorOptions opts) {
  if (have_vml()) return vml_sqrt(in, out, n);
  at::Tensor src = at::from_blob(const_cast<T*>(in), {n}, opts);
  at::Tensor dst = at::from_blob(out, {n}, opts);
  at::cpu::sqrt_out(dst, src);
}

// out[0, n) = sqrt(in[0, n)) for a run holding zeros and values: staged (zeros -> 1) in
// `staging` (n <= chunk), computed there, and the zeros put back. out may be in.
template <typename T>
void sqrt_staged(const T* in, T* out, int64_t n, T* staging, at::TensorOptions opts) {
  using U = Bits<T>;
  const auto* in_bits = reinterpret_cast<const U*>(in);
  const T one = T(1);
  U one_bits;
  std::memcpy(&one_bits, &one, sizeof(T));
  replace_zeros(in_bits, reinterpret_cast<U*>(staging), n, one_bits);
  plain_sqrt(staging, staging, n, opts);
  restore_zeros(in_bits, reinterpret_cast<const U*>(staging), reinterpret_cast<U*>(out), n);
}

// What a block of kBlock elements holds: no zero, only zeros, or both.
enum class BlockKind : uint8_t { kValues, kZeros, kMixed };

// The end of the run of blocks of kind[begin]'s kind that starts at `begin`.
int64_t run_end(const BlockKind* kind, int64_t begin, int64_t blocks) {
  int64_t end = begin + 1;
  while (end < blocks && kind[end] == kind[begin]) ++end;
  return end;
}

// out[0, n) = sqrt(in[0, n)), n <= kChunk. The chunk is read in blocks of kBlock elements and
// cut into runs of one kind: a run of values goes to torch's routine straight from `in` to
// `out`, a run of zeros is copied (sqrt(+-0) = +-0), a run of mixed blocks is staged; a run of
// values shorter than kMinStraight joins the staged run around it (one routine call instead
// of three where zeros are scattered). The zeros a meProp layer leaves in an optimizer's
// moments are whole rows (units no example kept yet), so most blocks are all values or all
// zeros and only the rows' edges are staged.
template <typename T>
void sqrt_chunk(const T* in, T* out, int64_t n, T* staging, at::TensorOptions opts) {
  using U = Bits<T>;
  const auto* in_bits = reinterpret_cast<const U*>(in);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  BlockKind kind[kChunk / kBlock];
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t len = std::min(kBlock, n - b * kBlock);
    const int64_t zeros = count_zeros(in_bits + b * kBlock, len);
    kind[b] = zeros == 0 ? BlockKind::kValues : (zeros == len ? BlockKind::kZeros : BlockKind::kMixed);
  }
  for (int64_t b = 0; b < blocks;) {  // short runs of values beside staged ones are staged
    const int64_t e = run_end(kind, b, blocks);
    if (kind[b] == BlockKind::kValues && (e - b) * kBlock < kMinStraight) {
      const bool mixed_before = b > 0 && kind[b - 1] == BlockKind::kMixed;
      const bool mixed_after = e < blocks && kind[e] == BlockKind::kMixed;
      if (mixed_before || mixed_after) std::fill(kind + b, kind + e, BlockKind::kMixed);
    }
    b = e;
  }
  for (int64_t b = 0; b < blocks;) {
    const int64_t e = run_end(kind, b, blocks);
    const int64_t begin = b * kBlock, len = std::min(e * kBlock, n) - begin;
    if (kind[b] == BlockKind::kValues) {
      plain_sqrt(in + begin, out + begin, len, opts);
    } else if (kind[b] == BlockKind::kZeros) {
      if (out != in) std::memcpy(out + begin, in + begin, len * sizeof(T));
    } else {
      sqrt_staged(in + begin, out + begin, len, staging, opts);
    }
    b = e;
  }
}

// out = sqrt(in): with MKL, chunk by chunk, each cut into runs; without (each call of torch's
// kernel costs a TensorIterator), in chunks of kGrain, a chunk with zeros staged whole.
template <typename T>
void sqrt_with_zeros(const T* in, T* out, int64_t numel, at::TensorOptions opts) {
  const bool vml = have_vml();
  const int64_t chunk = vml ? kChunk : kGrain;
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    std::unique_ptr<T[]> staging(new T[chunk]);
    for (int64_t s = begin; s < end; s += chunk) {
      const int64_t n = std::min(chunk, end - s);
      if (vml) {
        sqrt_chunk(in + s, out + s, n, staging.get(), opts);
      } else if (count_zeros(reinterpret_cast<const Bits<T>*>(in + s), n) == 0) {
        plain_sqrt(in + s, out + s, n, opts);
      } else {
        sqrt_staged(in + s, out + s, n, staging.get(), opts);
      }
    }
  });
}

// The zero-skipping path applies: a dense, contiguous CPU float32/float64 tensor of some size.
bool applies(const at::Tensor& t) {
  const auto dtype = t.scalar_type();
  return t.layout() == at::kStrided && t.device().is_cpu() && (dtype == at::kFloat || dtype == at::kDouble) &&
         t.is_contiguous() && t.numel() >= kMinNumel && !t.is_neg() && !t.is_conj();
}

// Whether a sample of `t` (for which applies() holds) holds a +-0.
bool holds_zero(const at::Tensor& t) {
  if (t.scalar_type() == at::kFloat) {
    return sample_has_zero(static_cast<const uint32_t*>(t.const_data_ptr()), t.numel());
  }
  return sample_has_zero(static_cast<const uint64_t*>(t.const_data_ptr()), t.numel());
}

// out = sqrt(self) for a `self` sampled with zeros; out contiguous, same dtype and numel (may be self).
void sqrt_into(const at::Tensor& self, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(self.scalar_type(), "meprop_sqrt", [&] {
    sqrt_with_zeros(self.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), self.numel(),
                    self.options().device(at::kCPU));
  });
}

// Each entry point hands a tensor whose sample has no zero (or one the path does not apply
// to) to torch's kernel unchanged: the only cost added there is the sample.
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
