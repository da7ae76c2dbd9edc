// meprop::sampled_backward: the per-example meProp backward of a linear layer with unbiased
// sampled selection (mode="sampled", meprop/sampling.py is the reference): per row of dy,
// entry i is kept with probability p_i = min(1, c |dy_i|), c solved so that sum p = k, and a
// kept entry is scaled by 1/p_i. Selection, draw and rescale are one pass over the row (after
// the solve), written either as index/value lists (the gather formulation) or as the masked,
// rescaled (B, n) matrix (the masked GEMM formulations); then the same gathers or GEMMs as
// meprop::per_example_backward.
//
// The solve ("water-filling", O(n) expected): with T the surely-kept set (c |dy_i| > 1),
// c = (k - |T|) / (sum of |dy| outside T). Starting from T empty, each pass recomputes T from
// the current c; c only grows while T is not yet the answer, so every entry it adds belongs to
// the answer, and the first T that is stable is the smallest valid one (the reference's t).
// Usually one or two passes; after kMaxPasses the exact sort-based solve takes over.
// Zeros are never kept; NaN and inf always (p = 1, outside the budget). A row with at most k
// positive finite entries keeps each of them with p = 1.
//
// Random draws: one 64-bit number from the torch Generator (the CPU default generator when
// none is given) per call, taken under the generator's lock, seeds a counter-based stream:
// entry (r, j) gets h = fmix32(s0 ^ fmix32(j * phi + key_r)) with key_r a hash of the seed's
// high half and r (fmix32: MurmurHash3's finaliser, phi = 0x9e3779b9), its top 24 bits the
// float32 uniform in [0, 1) (float64: 53 bits from h and fmix32 of h). Same generator state,
// same draws, on any number of threads and in every formulation. (The PyTorch path draws
// torch.rand: other draws, the same law.) A kept entry with p < 1 is written as sign(dy) / c
// (= dy / p up to rounding).
#include <ATen/CPUGeneratorImpl.h>

#include <limits>
#include <mutex>

#include "rows.h"
#include "select.h"

namespace meprop {
namespace detail {
namespace {

constexpr int kMaxPasses = 8;

MEPROP_INLINE uint32_t fmix32(uint32_t h) {  // MurmurHash3's finaliser: a bijection of 32 bits
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}

// The draws of row r: bits[j] for j in [0, n), 24 random bits (float32) or 53 (float64) as an
// integer; entry j is kept when bits[j] < p * 2^24 (2^53), i.e. u < p for u uniform in [0, 1).
template <typename T>
using DrawBits = typename std::conditional<std::is_same<T, float>::value, int32_t, int64_t>::type;

template <typename T>
MEPROP_INLINE void row_bits(uint64_t seed, int64_t r, int64_t n, DrawBits<T>* bits) {
  const uint32_t s0 = uint32_t(seed), s1 = uint32_t(seed >> 32);
  const uint32_t key = fmix32(s1 ^ fmix32(uint32_t(r) * 0x9e3779b9u + uint32_t(uint64_t(r) >> 32)));
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t h = fmix32(s0 ^ fmix32(uint32_t(j) * 0x9e3779b9u + key));
    if constexpr (std::is_same<T, float>::value) {
      bits[j] = int32_t(h >> 8);
    } else {
      const uint32_t h2 = fmix32(h ^ 0x6a09e667u ^ s1);
      bits[j] = int64_t(((uint64_t(h) << 32) | h2) >> 11);
    }
  }
}

template <typename T>
MEPROP_INLINE bool finite_abs(T a) { return a <= std::numeric_limits<T>::max(); }  // NaN: false

// The exact solve by sorting the k largest (the reference's formula): c for row[0:n), which
// has more than k positive finite entries. scratch: n values.
template <typename T>
double solve_sorted(const T* row, int64_t n, int64_t k, std::vector<double>& scratch) {
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T a = std::abs(row[j]);
    if (finite_abs(a) && a > 0) scratch[count++] = double(a);
  }
  std::nth_element(scratch.begin(), scratch.begin() + k, scratch.begin() + count, std::greater<double>());
  std::sort(scratch.begin(), scratch.begin() + k, std::greater<double>());
  double rest = 0;  // the sum of all but the t largest, t from k down
  for (int64_t i = k; i < count; ++i) rest += scratch[i];
  std::vector<double> rests(k);
  for (int64_t t = k - 1; t >= 0; --t) { rest += scratch[t]; rests[t] = rest; }
  for (int64_t t = 0; t < k; ++t) {
    const double c = double(k - t) / rests[t];
    if (c * scratch[t] <= 1) return c;
  }
  return double(k) / rests[k - 1];  // not reached: t = k - 1 is always valid
}

// c of row[0:n) (infinity: every positive entry is kept surely).
template <typename T>
double solve_row(const T* row, int64_t n, int64_t k, std::vector<double>& scratch) {
  double total = 0, top = 0;
  int64_t positive = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T a = std::abs(row[j]);
    const bool fin = finite_abs(a);
    total += fin ? double(a) : 0.0;
    top = std::max(top, fin ? double(a) : 0.0);
    positive += fin & (a > 0);
  }
  if (positive <= k) return std::numeric_limits<double>::infinity();
  double c = double(k) / total;
  if (c * top <= 1) return c;
  int64_t sure = 0;  // |T| of the set c was computed from
  for (int pass = 0; pass < kMaxPasses; ++pass) {
    int64_t count = 0;
    double rest = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double a = double(std::abs(row[j]));
      const bool fin = finite_abs(a);
      const bool in = fin & (c * a > 1);
      count += in;
      rest += (fin & !in) ? a : 0.0;
    }
    if (count == sure) return c;
    if (count >= k || !(rest > 0)) break;  // rounding at the edge: the exact solve decides
    sure = count;
    c = double(k - count) / rest;
  }
  return solve_sorted(row, n, k, scratch);
}

template <typename T>
MEPROP_INLINE int64_t sample_row_impl(const T* row, int64_t n, int64_t k, uint64_t seed, int64_t r,
                                      SampleScratch& s, int64_t* idx, T* val, T* out, uint8_t* touched) {
  const double cd = solve_row(row, n, k, s.values);
  const T c = T(cd), inv = T(1) / c;  // a kept entry with p < 1 is dy / (c |dy|) = sign(dy) / c
  const T full = std::is_same<T, float>::value ? T(16777216.0) : T(9007199254740992.0);  // 2^24, 2^53
  DrawBits<T>* bits;
  if constexpr (std::is_same<T, float>::value) bits = s.bits32.data();
  else bits = s.bits64.data();
  row_bits<T>(seed, r, n, bits);
  int64_t t = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T v = row[j], a = std::abs(v);
    const T p = a == T(0) ? T(0) : std::min(T(1), c * a);  // NaN, inf: 1
    const bool keep = T(bits[j]) < p * full;
    const T kept = keep ? (p < T(1) ? std::copysign(inv, v) : v) : T(0);
    if (out) {
      out[j] = kept;
      if (touched) touched[j] |= uint8_t(keep);
    } else {
      idx[t] = j;
      val[t] = kept;
      t += keep;
    }
  }
  return t;
}

}  // namespace

MEPROP_CLONES int64_t sample_row(const float* row, int64_t n, int64_t k, uint64_t seed, int64_t r, SampleScratch& s,
                                 int64_t* idx, float* val, float* out, uint8_t* touched) {
  return sample_row_impl(row, n, k, seed, r, s, idx, val, out, touched);
}
MEPROP_CLONES int64_t sample_row(const double* row, int64_t n, int64_t k, uint64_t seed, int64_t r,
                                 SampleScratch& s, int64_t* idx, double* val, double* out, uint8_t* touched) {
  return sample_row_impl(row, n, k, seed, r, s, idx, val, out, touched);
}

namespace {

// The seed of this call's stream: one draw from the generator (the default CPU one if none).
uint64_t draw_seed(const std::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->random64();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sampled_backward(
    const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& weight_in, int64_t k,
    const std::optional<at::Generator>& generator, bool need_input, bool need_weight, bool need_bias,
    bool dense_bias, bool dense_weight, c10::string_view formulation) {
  constexpr const char* op = "meprop::sampled_backward";
  check_backward_operands(op, dy_in, x_in, weight_in, k);
  const int64_t named = formulation_code(op, formulation);
  const int64_t R = dy_in.size(0), n = dy_in.size(1), m = x_in.size(1);
  k = std::min(k, n);
  const int64_t code = named < 0 ? choose_formulation(R, n, m, k) : named;
  auto dy = dy_in.contiguous();
  auto x = x_in.contiguous();
  auto weight = weight_in.contiguous();
  auto opts = dy.options();
  auto lopts = opts.dtype(at::kLong);
  const bool masked = code != kGather && R > 0;
  at::Tensor grad_input = need_input ? (n == 0 ? at::zeros({R, m}, opts) : at::empty({R, m}, opts)) : at::empty({0}, opts);
  at::Tensor row_index = at::empty({0}, lopts);
  at::Tensor rows = !need_weight ? at::empty({0}, opts)
                    : !dense_weight ? at::empty({0, m}, opts)
                    : masked ? at::empty({n, m}, opts)
                             : at::zeros({n, m}, opts);
  at::Tensor grad_bias = need_bias ? (dense_bias ? dy.sum(0) : at::zeros({n}, opts)) : at::empty({0}, opts);
  if (!(need_input || need_weight || need_bias) || R == 0 || n == 0) return {grad_input, row_index, rows, grad_bias};
  note_formulation(code);
  const uint64_t seed = draw_seed(generator);

  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "meprop_sampled_backward", [&] {
    using T = scalar_t;
    const T* dyp = dy.data_ptr<T>();
    const bool need_rows = need_weight && !dense_weight;
    if (masked) {
      at::Tensor kept = at::empty({R, n}, opts);  // (B, n): the rescaled kept entries, zero elsewhere
      T* kp = kept.data_ptr<T>();
      std::vector<std::vector<uint8_t>> flags(need_rows ? at::get_num_threads() : 0, std::vector<uint8_t>(n, 0));
      for_row_blocks(R, n, [&](int64_t r0, int64_t r1) {
        SampleScratch scratch(n);
        uint8_t* mine = need_rows ? flags[at::get_thread_num()].data() : nullptr;
        for (int64_t r = r0; r < r1; ++r)
          sample_row(dyp + r * n, n, k, seed, r, scratch, nullptr, (T*)nullptr, kp + r * n, mine);
      });
      if (need_rows) {
        std::vector<uint8_t> touched(n, 0);
        for (const auto& f : flags)
          for (int64_t j = 0; j < n; ++j) touched[j] |= f[j];
        std::vector<int64_t> names;
        for (int64_t j = 0; j < n; ++j)
          if (touched[j]) names.push_back(j);
        row_index = at::empty({(int64_t)names.size()}, lopts);
        std::copy(names.begin(), names.end(), row_index.data_ptr<int64_t>());
      }
      masked_gemms(kept, x, weight, row_index, code == kMaskedDense, need_input, need_weight,
                   need_bias && !dense_bias, dense_weight, grad_input, rows, grad_bias);
      return;
    }
    // Gathers: each row's kept entries as a list (capacity n: row r at idx[r * n]), cnt[r] long.
    std::vector<int64_t> idx(R * n), cnt(R);
    std::vector<T> val(R * n);
    for_row_blocks(R, n, [&](int64_t r0, int64_t r1) {
      SampleScratch scratch(n);
      for (int64_t r = r0; r < r1; ++r)
        cnt[r] = sample_row(dyp + r * n, n, k, seed, r, scratch, idx.data() + r * n, val.data() + r * n,
                            (T*)nullptr, nullptr);
    });
    int64_t E = 0;
    for (int64_t r = 0; r < R; ++r) E += cnt[r];
    Transposed<T> tr;
    if (need_weight || (need_bias && !dense_bias)) tr = transpose_selection(idx.data(), val.data(), cnt.data(), R, n, n);
    const int64_t U = (int64_t)tr.touched.size();
    if (need_bias && !dense_bias) {
      T* gb = grad_bias.data_ptr<T>();
      for (int64_t u = 0; u < U; ++u) {
        T s = 0;
        for (int64_t e = tr.offsets[u]; e < tr.offsets[u + 1]; ++e) s += tr.value[e];
        gb[tr.touched[u]] = s;
      }
    }
    if (need_input) {
      T* gi = grad_input.data_ptr<T>();
      const T* w = weight.data_ptr<T>();
      for_tiles(m, R, E * m, kTile<T>, [&](int64_t r0, int64_t r1, int64_t c0, int64_t len) {
        gather_rows(idx.data(), val.data(), cnt.data(), n, r0, r1, w, m, gi, m, c0, len);
      });
    }
    if (need_rows) {
      row_index = at::empty({U}, lopts);
      std::copy(tr.touched.begin(), tr.touched.end(), row_index.data_ptr<int64_t>());
      rows = at::empty({U, m}, opts);
    }
    if (need_weight && U > 0) {
      T* out = rows.data_ptr<T>();
      const T* xp = x.data_ptr<T>();
      const int64_t* dest = dense_weight ? tr.touched.data() : nullptr;
      for_tiles(m, U, E * m, kTile<T>, [&](int64_t u0, int64_t u1, int64_t c0, int64_t len) {
        scatter_rows(tr.offsets.data(), tr.example.data(), tr.value.data(), dest, u0, u1, xp, m, out, m, c0, len);
      });
    }
  });
  return {grad_input, row_index, rows, grad_bias};
}

}  // namespace
}  // namespace detail
}  // namespace meprop

TORCH_LIBRARY_FRAGMENT(meprop, m) {
  m.def(
      "sampled_backward(Tensor dy, Tensor x, Tensor weight, int k, Generator? generator, bool need_input, "
      "bool need_weight, bool need_bias, bool dense_bias, bool dense_weight, str formulation) "
      "-> (Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
}

TORCH_LIBRARY_IMPL(meprop, CPU, m) { m.impl("sampled_backward", &meprop::detail::sampled_backward); }
