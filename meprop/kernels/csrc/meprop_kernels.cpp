// meprop compiled CPU kernels (paper: Sun et al. 2017, Section 2 and Section 4's LSTM).
//
// Registered as PyTorch custom operators in the `meprop` namespace (TORCH_LIBRARY);
// their fake (meta) implementations live in meprop/kernels/_ops.py. Float32 and
// float64 on CPU; everything else takes the PyTorch path in meprop/functional.py.
//
//   per_example_backward  fused per-example meProp backward of a linear layer:
//                         top-k of |dy| per row, grad_input, the touched weight-gradient
//                         rows (sorted unique) and the bias gradient, in two passes.
//   lstm_forward          the whole MepropLSTM sequence forward (one op, no Python per step)
//   lstm_backward         the whole sequence backward with top-k on the gate gradients.
//
// Two formulations of the per-example backward (chosen by the caller, see
// meprop/kernels/__init__.py:choose_formulation):
//   "gather"       row gathers: grad_input[b] = sum_t v[b,t] W[j[b,t]]; weight row j =
//                  sum over the examples b that kept j of v[b,j] x[b]. Blocked over the
//                  in_features axis (tiles of 512 bytes), so the touched W / x rows of a
//                  tile stay in cache and every thread owns its own columns (no atomics).
//   "masked_gemm"  the kept entries scattered into a zero (B, n) matrix, then GEMMs
//                  (wins when k/n is high enough that gathers lose to a dense GEMM).
//
// Vectorisation: the hot loops are plain C++ that GCC auto-vectorises at -O3; on x86-64
// with GCC they are compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA) and the
// baseline with `target_clones`, and the loader picks one at run time (ifunc), so the
// built library runs on any x86-64 CPU (no -march=native).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <atomic>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(MEPROP_NO_CLONES)
#define MEPROP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MEPROP_CLONES
#endif
#define MEPROP_INLINE inline __attribute__((always_inline))

namespace meprop {
namespace {

// ------------------------------------------------------------------ selection
// |v| as an order-preserving unsigned key: the sign bit cleared. NaN's key is above
// +inf's, so NaN counts as the largest magnitude (as in torch.topk) and is kept.
template <typename T> struct Key;
template <> struct Key<float> {
  using type = uint32_t;
  static MEPROP_INLINE uint32_t of(float v) { uint32_t b; std::memcpy(&b, &v, 4); return b & 0x7fffffffu; }
};
template <> struct Key<double> {
  using type = uint64_t;
  static MEPROP_INLINE uint64_t of(double v) { uint64_t b; std::memcpy(&b, &v, 8); return b & 0x7fffffffffffffffull; }
};

// Scratch space of one thread for selecting k of n.
template <typename T>
struct SelectScratch {
  using K = typename Key<T>::type;
  std::vector<K> keys;      // n (quickselect) or k (heap)
  std::vector<int64_t> pos; // k (heap)
  SelectScratch(int64_t n, int64_t k) : keys(std::max(n, k)), pos(k) {}
};

// Number of entries of row[begin:end) whose key exceeds thr (vectorisable).
template <typename T>
MEPROP_INLINE int64_t count_above(const T* row, int64_t begin, int64_t end, typename Key<T>::type thr) {
  int64_t c = 0;
  for (int64_t i = begin; i < end; ++i) c += Key<T>::of(row[i]) > thr;
  return c;
}

template <typename K>
MEPROP_INLINE void sift_down(K* hk, int64_t* hp, int64_t k, int64_t i) {
  // min-heap on key
  K key = hk[i];
  int64_t p = hp[i];
  for (;;) {
    int64_t l = 2 * i + 1;
    if (l >= k) break;
    int64_t r = l + 1;
    int64_t s = (r < k && hk[r] < hk[l]) ? r : l;
    if (!(hk[s] < key)) break;
    hk[i] = hk[s]; hp[i] = hp[s];
    i = s;
  }
  hk[i] = key; hp[i] = p;
}

// The k largest-magnitude entries of row[0:n), written in ascending index order.
// Ties: among equal magnitudes the lower indices are kept.
template <typename T>
MEPROP_INLINE void select_row_impl(const T* row, int64_t n, int64_t k, int64_t* idx, T* val,
                                   SelectScratch<T>& s) {
  using K = typename Key<T>::type;
  if (k >= n) {
    for (int64_t i = 0; i < n; ++i) { idx[i] = i; val[i] = row[i]; }
    return;
  }
  if (k * 16 <= n) {
    // Threshold heap: a block of 16 is looked at only if one of its keys beats the
    // current k-th largest, so most of the row costs one vector compare.
    K* hk = s.keys.data();
    int64_t* hp = s.pos.data();
    for (int64_t i = 0; i < k; ++i) { hk[i] = Key<T>::of(row[i]); hp[i] = i; }
    for (int64_t i = k / 2 - 1; i >= 0; --i) sift_down(hk, hp, k, i);
    K thr = hk[0];
    int64_t i = k;
    for (; i < n; i += 16) {
      int64_t end = std::min(n, i + 16);
      if (count_above(row, i, end, thr) == 0) continue;
      for (int64_t j = i; j < end; ++j) {
        K key = Key<T>::of(row[j]);
        if (key > thr) {
          hk[0] = key; hp[0] = j;
          sift_down(hk, hp, k, 0);
          thr = hk[0];
        }
      }
    }
    // (An entry equal to the threshold never displaces one: ties keep the earlier one.)
    std::sort(hp, hp + k);
    for (int64_t t = 0; t < k; ++t) { idx[t] = hp[t]; val[t] = row[hp[t]]; }
    return;
  }
  // Quickselect on the keys, then one ordered pass.
  K* keys = s.keys.data();
  for (int64_t i = 0; i < n; ++i) keys[i] = Key<T>::of(row[i]);
  std::nth_element(keys, keys + (n - k), keys + n);
  K thr = keys[n - k];  // the k-th largest key
  int64_t above = count_above(row, 0, n, thr);
  int64_t ties = k - above;
  int64_t t = 0;
  for (int64_t i = 0; i < n && t < k; ++i) {
    K key = Key<T>::of(row[i]);
    if (key > thr || (key == thr && ties-- > 0)) { idx[t] = i; val[t] = row[i]; ++t; }
  }
}

MEPROP_CLONES void select_row(const float* row, int64_t n, int64_t k, int64_t* idx, float* val, SelectScratch<float>& s) {
  select_row_impl(row, n, k, idx, val, s);
}
MEPROP_CLONES void select_row(const double* row, int64_t n, int64_t k, int64_t* idx, double* val, SelectScratch<double>& s) {
  select_row_impl(row, n, k, idx, val, s);
}

// ------------------------------------------------------------------ gathers
// Columns per tile: 512 bytes, i.e. 8 vectors of 64 bytes (8 AVX-512 registers of
// accumulators; 16 AVX2 or 32 SSE registers' worth in the other clones).
template <typename T> constexpr int64_t kTile = 512 / sizeof(T);
template <typename T> constexpr int64_t kLanes = 64 / sizeof(T);

// GCC vector extensions: one 64-byte vector, lowered to what the clone's target has.
template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(64))); };

template <typename T>
MEPROP_INLINE typename VecOf<T>::type vload(const T* p) {
  typename VecOf<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
MEPROP_INLINE void vstore(T* p, typename VecOf<T>::type v) { std::memcpy(p, &v, sizeof(v)); }

// acc (len columns) = sum over the list of (v, src row) of v * src[c0:c0+len].
// NV vectors of accumulators held in registers; the list is given by a functor
// item(i) -> (value, pointer to the row's column c0) for i in [0, count).
template <typename T, int NV, typename Item>
MEPROP_INLINE void axpy_list_vec(int64_t count, const Item& item, T* out) {
  using V = typename VecOf<T>::type;
  constexpr int64_t W = kLanes<T>;
  V acc[NV];
#pragma GCC unroll 8
  for (int q = 0; q < NV; ++q) acc[q] = V{};
  for (int64_t i = 0; i < count; ++i) {
    T v;
    const T* s;
    item(i, v, s);
    const V vv = V{} + v;
#pragma GCC unroll 8
    for (int q = 0; q < NV; ++q) acc[q] += vv * vload<T>(s + q * W);
  }
#pragma GCC unroll 8
  for (int q = 0; q < NV; ++q) vstore<T>(out + q * W, acc[q]);
}

template <typename T, typename Item>
MEPROP_INLINE void axpy_list(int64_t count, const Item& item, T* out, int64_t len) {
  constexpr int64_t W = kLanes<T>;
  if (len == kTile<T>) {
    axpy_list_vec<T, 8>(count, item, out);
    return;
  }
  int64_t c = 0;
  for (; c + W <= len; c += W) {
    auto shifted = [&](int64_t i, T& v, const T*& s) { item(i, v, s); s += c; };
    axpy_list_vec<T, 1>(count, shifted, out + c);
  }
  if (c < len) {
    T acc[kLanes<T>] = {};
    const int64_t rest = len - c;
    for (int64_t i = 0; i < count; ++i) {
      T v;
      const T* s;
      item(i, v, s);
      for (int64_t j = 0; j < rest; ++j) acc[j] += v * s[c + j];
    }
    for (int64_t j = 0; j < rest; ++j) out[c + j] = acc[j];
  }
}

// out[r, c0:c0+len] = sum_t val[r, t] * src[idx[r, t], c0:c0+len] for r in [r0, r1), with
// cnt[r] entries (cnt null: k each). A zero count writes zeros.
template <typename T>
MEPROP_INLINE void gather_rows_impl(const int64_t* idx, const T* val, const int64_t* cnt, int64_t k, int64_t r0,
                                    int64_t r1, const T* src, int64_t lds, T* out, int64_t ldo, int64_t c0,
                                    int64_t len) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t* ir = idx + r * k;
    const T* vr = val + r * k;
    auto item = [&](int64_t t, T& v, const T*& s) { v = vr[t]; s = src + ir[t] * lds + c0; };
    axpy_list<T>(cnt ? cnt[r] : k, item, out + r * ldo + c0, len);
  }
}

MEPROP_CLONES void gather_rows(const int64_t* idx, const float* val, const int64_t* cnt, int64_t k, int64_t r0,
                               int64_t r1, const float* src, int64_t lds, float* out, int64_t ldo, int64_t c0,
                               int64_t len) {
  gather_rows_impl(idx, val, cnt, k, r0, r1, src, lds, out, ldo, c0, len);
}
MEPROP_CLONES void gather_rows(const int64_t* idx, const double* val, const int64_t* cnt, int64_t k, int64_t r0,
                               int64_t r1, const double* src, int64_t lds, double* out, int64_t ldo, int64_t c0,
                               int64_t len) {
  gather_rows_impl(idx, val, cnt, k, r0, r1, src, lds, out, ldo, c0, len);
}

// The kept (row, value) pairs grouped by output row j: a CSR over the touched rows.
template <typename T>
struct Transposed {
  std::vector<int64_t> touched;  // U sorted unique output rows
  std::vector<int64_t> offsets;  // U + 1
  std::vector<int64_t> example;  // E: the row of x each entry multiplies
  std::vector<T> value;          // E
};

template <typename T>
Transposed<T> transpose_selection(const int64_t* idx, const T* val, const int64_t* cnt, int64_t R, int64_t k,
                                  int64_t n) {
  Transposed<T> tr;
  std::vector<int64_t> count(n + 1, 0);
  int64_t E = 0;
  for (int64_t r = 0; r < R; ++r) {
    const int64_t m = cnt ? cnt[r] : k;
    for (int64_t t = 0; t < m; ++t) count[idx[r * k + t]]++;
    E += m;
  }
  std::vector<int64_t> slot(n, -1);
  for (int64_t j = 0; j < n; ++j)
    if (count[j]) { slot[j] = (int64_t)tr.touched.size(); tr.touched.push_back(j); }
  const int64_t U = (int64_t)tr.touched.size();
  tr.offsets.assign(U + 1, 0);
  for (int64_t u = 0; u < U; ++u) tr.offsets[u + 1] = tr.offsets[u] + count[tr.touched[u]];
  std::vector<int64_t> fill(tr.offsets.begin(), tr.offsets.end() - 1);
  tr.example.resize(E);
  tr.value.resize(E);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t m = cnt ? cnt[r] : k;
    for (int64_t t = 0; t < m; ++t) {
      int64_t p = fill[slot[idx[r * k + t]]]++;
      tr.example[p] = r;
      tr.value[p] = val[r * k + t];
    }
  }
  return tr;
}

// rows[dest(u), c0:c0+len] = sum over entries e of row u: value[e] * x[example[e], c0:c0+len]
template <typename T>
MEPROP_INLINE void scatter_rows_impl(const int64_t* offsets, const int64_t* example, const T* value,
                                     const int64_t* dest, int64_t u0, int64_t u1, const T* x, int64_t ldx,
                                     T* out, int64_t ldo, int64_t c0, int64_t len) {
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t e0 = offsets[u];
    auto item = [&](int64_t i, T& v, const T*& s) { v = value[e0 + i]; s = x + example[e0 + i] * ldx + c0; };
    axpy_list<T>(offsets[u + 1] - e0, item, out + (dest ? dest[u] : u) * ldo + c0, len);
  }
}

MEPROP_CLONES void scatter_rows(const int64_t* offsets, const int64_t* example, const float* value,
                                const int64_t* dest, int64_t u0, int64_t u1, const float* x, int64_t ldx,
                                float* out, int64_t ldo, int64_t c0, int64_t len) {
  scatter_rows_impl(offsets, example, value, dest, u0, u1, x, ldx, out, ldo, c0, len);
}
MEPROP_CLONES void scatter_rows(const int64_t* offsets, const int64_t* example, const double* value,
                                const int64_t* dest, int64_t u0, int64_t u1, const double* x, int64_t ldx,
                                double* out, int64_t ldo, int64_t c0, int64_t len) {
  scatter_rows_impl(offsets, example, value, dest, u0, u1, x, ldx, out, ldo, c0, len);
}

// Work below this many multiply-adds runs on the calling thread.
constexpr int64_t kSerialWork = 1 << 15;

// Blocked over columns: tasks = column tiles x row blocks; each task owns its
// output entries, so threads never write the same memory.
template <typename F>
void for_tiles(int64_t cols, int64_t rows, int64_t work, int64_t tile, const F& body) {
  if (cols == 0 || rows == 0) return;
  const int64_t ntiles = (cols + tile - 1) / tile;
  const int64_t threads = work < kSerialWork ? 1 : at::get_num_threads();
  int64_t nrb = 1;
  if (threads > 1 && ntiles < 4 * threads) nrb = std::min(rows, (4 * threads + ntiles - 1) / ntiles);
  const int64_t per = (rows + nrb - 1) / nrb;
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t tcol = task % ntiles, rb = task / ntiles;
      const int64_t c0 = tcol * tile, len = std::min(tile, cols - c0);
      const int64_t r0 = rb * per, r1 = std::min(rows, r0 + per);
      if (r0 < r1) body(r0, r1, c0, len);
    }
  };
  if (threads == 1) run(0, ntiles * nrb);
  else at::parallel_for(0, ntiles * nrb, 1, run);
}

// ------------------------------------------------------------------ formulations
// Codes in the order of meprop.kernels.FORMULATIONS.
enum Formulation : int64_t { kGather = 0, kMaskedGemm = 1, kDense = 2, kPytorch = 3, kUnified = 4, kNumFormulations = 5 };
std::atomic<int64_t> g_last{-1};
std::atomic<int64_t> g_counts[kNumFormulations];

void note_formulation(int64_t code) {
  TORCH_CHECK(code >= 0 && code < kNumFormulations, "meprop::note_formulation: unknown code ", code);
  g_last.store(code, std::memory_order_relaxed);
  g_counts[code].fetch_add(1, std::memory_order_relaxed);
}

// [last code (-1: none yet), then the count of each formulation]
std::vector<int64_t> formulation_stats() {
  std::vector<int64_t> out{g_last.load()};
  for (auto& c : g_counts) out.push_back(c.load());
  return out;
}

// Relative cost of one gathered multiply-add against one of a dense GEMM (measured on the
// project's 2-core AMD EPYC, float32; docs/performance.md).
constexpr double kGatherCost = 4.0;

// Gathers: 2*B*k*m multiply-adds at kGatherCost each. Masked GEMMs: B*n*m (grad_input)
// plus B*U*m (the touched rows, U <= min(n, B*k)) at GEMM speed. Below 16 rows a GEMM is a
// GEMV, memory-bound on W, while gathers read only the k rows they need: gathers.
int64_t choose_formulation(int64_t batch, int64_t n, int64_t m, int64_t k) {
  if (batch < 16 || k >= n) return kGather;
  const double touched = (double)std::min(n, batch * k);
  const double gather = 2.0 * batch * k * m * kGatherCost;
  const double masked = (double)batch * (n + touched) * m;
  return masked < gather ? kMaskedGemm : kGather;
}

// ------------------------------------------------------------------ per-example backward
template <typename T>
void select_all_rows(const T* dy, int64_t R, int64_t n, int64_t k, int64_t* idx, T* val) {
  auto body = [&](int64_t r0, int64_t r1) {
    SelectScratch<T> s(n, k);
    for (int64_t r = r0; r < r1; ++r) select_row(dy + r * n, n, k, idx + r * k, val + r * k, s);
  };
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1));
  if (R * n < 32768) body(0, R);
  else at::parallel_for(0, R, grain, body);
}

// The entries given by `indices` (random mode: chosen outside), with their values.
template <typename T>
void take_given(const T* dy, const int64_t* given, int64_t R, int64_t n, int64_t k, int64_t* idx, T* val) {
  for (int64_t r = 0; r < R; ++r)
    for (int64_t t = 0; t < k; ++t) {
      int64_t j = given[r * k + t];
      TORCH_CHECK(j >= 0 && j < n, "meprop::per_example_backward: index ", j, " out of range [0, ", n, ")");
      idx[r * k + t] = j;
      val[r * k + t] = dy[r * n + j];
    }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> per_example_backward(
    const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& weight_in, int64_t k,
    const std::optional<at::Tensor>& indices, bool need_input, bool need_weight, bool need_bias,
    bool dense_bias, bool dense_weight, c10::string_view formulation) {
  TORCH_CHECK(dy_in.dim() == 2 && x_in.dim() == 2 && weight_in.dim() == 2,
              "meprop::per_example_backward: dy (B, n), x (B, m), weight (n, m) must be 2-D");
  TORCH_CHECK(dy_in.device().is_cpu(), "meprop::per_example_backward: CPU tensors only");
  const int64_t R = dy_in.size(0), n = dy_in.size(1), m = x_in.size(1);
  TORCH_CHECK(x_in.size(0) == R && weight_in.size(0) == n && weight_in.size(1) == m,
              "meprop::per_example_backward: shapes do not match: dy ", dy_in.sizes(), ", x ", x_in.sizes(),
              ", weight ", weight_in.sizes());
  TORCH_CHECK(dy_in.scalar_type() == x_in.scalar_type() && dy_in.scalar_type() == weight_in.scalar_type(),
              "meprop::per_example_backward: dy, x and weight must share one dtype");
  TORCH_CHECK(k >= 1, "meprop::per_example_backward: k must be >= 1, got ", k);
  TORCH_CHECK(formulation == "auto" || formulation == "gather" || formulation == "masked_gemm",
              "meprop::per_example_backward: formulation must be 'auto', 'gather' or 'masked_gemm', got ",
              formulation);
  k = std::min(k, n);
  const int64_t code = formulation == "auto" ? choose_formulation(R, n, m, k)
                       : formulation == "gather" ? kGather : kMaskedGemm;
  note_formulation(code);
  const bool masked = code == kMaskedGemm;
  auto dy = dy_in.contiguous();
  auto x = x_in.contiguous();
  auto weight = weight_in.contiguous();
  auto opts = dy.options();
  auto lopts = opts.dtype(at::kLong);
  at::Tensor grad_input = need_input ? at::empty({R, m}, opts) : at::empty({0}, opts);
  at::Tensor row_index = at::empty({0}, lopts);
  at::Tensor rows = need_weight ? (dense_weight ? at::zeros({n, m}, opts) : at::empty({0, m}, opts)) : at::empty({0}, opts);
  at::Tensor grad_bias = need_bias ? (dense_bias ? dy.sum(0) : at::zeros({n}, opts)) : at::empty({0}, opts);
  if (!(need_input || need_weight || need_bias) || R == 0 || n == 0) return {grad_input, row_index, rows, grad_bias};

  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "meprop_per_example_backward", [&] {
    using T = scalar_t;
    at::Tensor idx_t = at::empty({R, k}, lopts);
    at::Tensor val_t = at::empty({R, k}, opts);
    int64_t* idx = idx_t.data_ptr<int64_t>();
    T* val = val_t.data_ptr<T>();
    const T* dyp = dy.data_ptr<T>();
    if (indices.has_value()) {
      auto given = indices->contiguous();
      TORCH_CHECK(given.scalar_type() == at::kLong && given.dim() == 2 && given.size(0) == R && given.size(1) == k,
                  "meprop::per_example_backward: indices must be int64 (B, k), got ", given.sizes());
      take_given(dyp, given.data_ptr<int64_t>(), R, n, k, idx, val);
    } else {
      select_all_rows(dyp, R, n, k, idx, val);
    }
    const bool need_rows = need_weight || (need_bias && !dense_bias);
    Transposed<T> tr;
    if (need_rows) tr = transpose_selection(idx, val, (const int64_t*)nullptr, R, k, n);
    const int64_t U = (int64_t)tr.touched.size();
    if (need_bias && !dense_bias) {
      T* gb = grad_bias.data_ptr<T>();
      for (int64_t u = 0; u < U; ++u) {
        T s = 0;
        for (int64_t e = tr.offsets[u]; e < tr.offsets[u + 1]; ++e) s += tr.value[e];
        gb[tr.touched[u]] = s;
      }
    }
    if (need_weight && !dense_weight) {
      row_index = at::empty({U}, lopts);
      std::copy(tr.touched.begin(), tr.touched.end(), row_index.data_ptr<int64_t>());
      rows = at::empty({U, m}, opts);
    }
    if (masked) {
      // Kept entries in a zero (B, n) matrix; grad_input and the touched rows are GEMMs.
      at::Tensor kept = at::zeros({R, n}, opts);
      T* kp = kept.data_ptr<T>();
      for (int64_t r = 0; r < R; ++r)
        for (int64_t t = 0; t < k; ++t) kp[r * n + idx[r * k + t]] = val[r * k + t];
      if (need_input) at::mm_out(grad_input, kept, weight);
      if (need_weight) {
        if (dense_weight) at::mm_out(rows, kept.t(), x);
        else if (U == n) at::mm_out(rows, kept.t(), x);
        else at::mm_out(rows, kept.index_select(1, row_index).t(), x);  // (U, B) x (B, m)
      }
      return;
    }
    if (need_input) {
      T* gi = grad_input.data_ptr<T>();
      const T* w = weight.data_ptr<T>();
      for_tiles(m, R, R * k * m, kTile<T>, [&](int64_t r0, int64_t r1, int64_t c0, int64_t len) {
        gather_rows(idx, val, nullptr, k, r0, r1, w, m, gi, m, c0, len);
      });
    }
    if (need_weight && U > 0) {
      T* out = rows.data_ptr<T>();
      const T* xp = x.data_ptr<T>();
      const int64_t* dest = dense_weight ? tr.touched.data() : nullptr;
      for_tiles(m, U, R * k * m, kTile<T>, [&](int64_t u0, int64_t u1, int64_t c0, int64_t len) {
        scatter_rows(tr.offsets.data(), tr.example.data(), tr.value.data(), dest, u0, u1, xp, m, out, m, c0, len);
      });
    }
  });
  return {grad_input, row_index, rows, grad_bias};
}

// ------------------------------------------------------------------ meprop::linear
// F.linear whose backward is the per-example meProp backward above, as a C++ autograd
// function: the eager backward runs without Python (its fixed cost is what decides the
// small shapes of the paper: batch 1 and 10 of a 500-wide layer).
class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, int64_t k, bool dense_bias, bool sparse_grad) {
    ctx->save_for_backward({input, weight});
    ctx->saved_data["k"] = k;
    ctx->saved_data["dense_bias"] = dense_bias;
    ctx->saved_data["sparse_grad"] = sparse_grad;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return at::linear(input, weight, bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[1];
    const int64_t k = ctx->saved_data["k"].toInt();
    const bool dense_bias = ctx->saved_data["dense_bias"].toBool();
    const bool sparse_grad = ctx->saved_data["sparse_grad"].toBool();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const bool need_input = ctx->needs_input_grad(0), need_weight = ctx->needs_input_grad(1);
    const bool need_bias = has_bias && ctx->needs_input_grad(2);
    const int64_t n = weight.size(0), m = weight.size(1);
    int64_t batch = 1;  // rows of the flattened leading dimensions (m or the batch may be 0)
    for (int64_t d = 0; d + 1 < input.dim(); ++d) batch *= input.size(d);
    at::Tensor dy = grads[0].reshape({batch, n});
    at::Tensor x = input.reshape({batch, m});
    at::Tensor gi, gw, gb;
    if (at::GradMode::is_enabled()) {
      // create_graph=True: the kernel's results would be constants (second-order terms dropped).
      // The same backward in differentiable ATen ops: dy masked to its top-k per row, then the
      // dense backward (as meprop/_impl/masked_backward.py does for the Python paths).
      at::Tensor kept = dy;
      if (k < n && batch > 0) {
        at::Tensor idx = std::get<1>(dy.detach().abs().topk(k, 1, true, false));
        kept = dy * at::zeros_like(dy).scatter_(1, idx, 1.0);
      }
      if (need_input) gi = kept.mm(weight).reshape(input.sizes());
      if (need_weight) gw = sparse_grad ? kept.t().mm(x).to_sparse(1) : kept.t().mm(x);
      if (need_bias) gb = (dense_bias ? dy : kept).sum(0);
      return {gi, gw, gb, at::Tensor(), at::Tensor(), at::Tensor()};
    }
    if (k >= n) {
      note_formulation(kDense);
      if (need_input) gi = dy.mm(weight).reshape(input.sizes());
      if (need_weight) gw = sparse_grad ? dy.t().mm(x).to_sparse(1) : dy.t().mm(x);  // COO whenever asked
      if (need_bias) gb = dy.sum(0);
    } else if (need_input || need_weight || need_bias) {
      auto out = per_example_backward(dy, x, weight, k, std::nullopt, need_input, need_weight, need_bias, dense_bias,
                                      !sparse_grad, "auto");
      if (need_input) gi = std::get<0>(out).reshape(input.sizes());
      if (need_weight) {
        const at::Tensor& rows = std::get<2>(out);
        gw = sparse_grad ? at::_sparse_coo_tensor_unsafe(std::get<1>(out).unsqueeze(0), rows, weight.sizes(),
                                                         rows.options().layout(at::kSparse), true)
                         : rows;
      }
      if (need_bias) gb = std::get<3>(out);
    }
    return {gi, gw, gb, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor linear_autograd(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           int64_t k, bool dense_bias, bool sparse_grad) {
  return LinearFunction::apply(input, weight, bias, k, dense_bias, sparse_grad);
}

at::Tensor linear_plain(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        int64_t k, bool dense_bias, bool sparse_grad) {
  return at::linear(input, weight, bias);
}

// ------------------------------------------------------------------ LSTM
// Fast sigmoid / tanh for float (a Cephes-style exp, ~2 ulp, vectorisable); float64
// uses libm so that k = 4h matches nn.LSTM to float64 precision.
MEPROP_INLINE float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float z = x * 1.44269504088896341f;
  const int32_t ni = (int32_t)(z + (z >= 0.0f ? 0.5f : -0.5f));
  const float nf = (float)ni;
  float r = x - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (ni + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}
MEPROP_INLINE float sigmoid_of(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
MEPROP_INLINE float tanh_of(float x) {
  const float e = exp_approx(-2.0f * std::fabs(x));
  const float t = (1.0f - e) / (1.0f + e);
  return std::copysign(t, x);
}
MEPROP_INLINE double sigmoid_of(double x) { return 1.0 / (1.0 + std::exp(-x)); }
MEPROP_INLINE double tanh_of(double x) { return std::tanh(x); }

// One step of one sequence: gates pre-activations g (4h) -> activated in place; c, h updated.
template <typename T>
MEPROP_INLINE void lstm_cell_impl(T* g, const T* gh, T* c, T* h, int64_t H) {
  for (int64_t j = 0; j < 4 * H; ++j) g[j] += gh[j];
  for (int64_t j = 0; j < H; ++j) g[j] = sigmoid_of(g[j]);
  for (int64_t j = H; j < 2 * H; ++j) g[j] = sigmoid_of(g[j]);
  for (int64_t j = 2 * H; j < 3 * H; ++j) g[j] = tanh_of(g[j]);
  for (int64_t j = 3 * H; j < 4 * H; ++j) g[j] = sigmoid_of(g[j]);
  for (int64_t j = 0; j < H; ++j) {
    const T cn = g[H + j] * c[j] + g[j] * g[2 * H + j];
    c[j] = cn;
    h[j] = g[3 * H + j] * tanh_of(cn);
  }
}
MEPROP_CLONES void lstm_cell(float* g, const float* gh, float* c, float* h, int64_t H) { lstm_cell_impl(g, gh, c, h, H); }
MEPROP_CLONES void lstm_cell(double* g, const double* gh, double* c, double* h, int64_t H) { lstm_cell_impl(g, gh, c, h, H); }

// Gate-gradient of one step of one sequence. dh, dc (h) in; dG (4h) out; dc <- dc_prev.
template <typename T>
MEPROP_INLINE void lstm_cell_grad_impl(const T* g, const T* c, const T* c_prev, const T* dh, T* dc, T* dG, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
    const T tc = tanh_of(c[j]);
    const T dcj = dc[j] + dh[j] * o * (T(1) - tc * tc);
    dG[j] = dcj * gg * i * (T(1) - i);
    dG[H + j] = dcj * c_prev[j] * f * (T(1) - f);
    dG[2 * H + j] = dcj * i * (T(1) - gg * gg);
    dG[3 * H + j] = dh[j] * tc * o * (T(1) - o);
    dc[j] = dcj * f;
  }
}
MEPROP_CLONES void lstm_cell_grad(const float* g, const float* c, const float* cp, const float* dh, float* dc, float* dG, int64_t H) {
  lstm_cell_grad_impl(g, c, cp, dh, dc, dG, H);
}
MEPROP_CLONES void lstm_cell_grad(const double* g, const double* c, const double* cp, const double* dh, double* dc, double* dG, int64_t H) {
  lstm_cell_grad_impl(g, c, cp, dh, dc, dG, H);
}

std::vector<int64_t> read_lengths(const std::optional<at::Tensor>& lengths, int64_t B, int64_t T) {
  std::vector<int64_t> len(B, T);
  if (lengths.has_value() && lengths->defined()) {
    auto l = lengths->to(at::kLong).contiguous();
    TORCH_CHECK(l.numel() == B, "meprop::lstm: lengths must have one entry per sequence");
    const int64_t* lp = l.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK(lp[b] >= 0 && lp[b] <= T, "meprop::lstm: lengths must lie in [0, ", T, "]");
      len[b] = lp[b];
    }
  }
  return len;
}

void check_lstm_operands(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                         const at::Tensor& w_hh) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu(), "meprop::lstm: x must be a (B, T, in) CPU tensor");
  const int64_t B = x.size(0), I = x.size(2), H = w_hh.size(1);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == 4 * H && w_ih.size(1) == I, "meprop::lstm: weight_ih must be (4h, in)");
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == 4 * H, "meprop::lstm: weight_hh must be (4h, h)");
  TORCH_CHECK(h0.sizes() == c0.sizes() && h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H,
              "meprop::lstm: h0 and c0 must be (B, h)");
}

// Returns output (B, T, h), h_n, c_n (B, h), the activated gates (B, T, 4h) and cells (B, T, h).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_forward(
    const at::Tensor& x_in, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh, const std::optional<at::Tensor>& lengths) {
  check_lstm_operands(x_in, h0, c0, w_ih, w_hh);
  const int64_t B = x_in.size(0), T_ = x_in.size(1), I = x_in.size(2), H = w_hh.size(1);
  auto x = x_in.contiguous();
  auto opts = x.options();
  auto len = read_lengths(lengths, B, T_);
  at::Tensor gates = at::empty({B, T_, 4 * H}, opts);
  if (B * T_ > 0) {
    at::Tensor flat = gates.view({B * T_, 4 * H});
    at::addmm_out(flat, b_ih + b_hh, x.view({B * T_, I}), w_ih.t());
  }
  at::Tensor output = at::zeros({B, T_, H}, opts);
  at::Tensor cells = at::zeros({B, T_, H}, opts);
  at::Tensor h = h0.contiguous().clone(), c = c0.contiguous().clone();
  at::Tensor gh = at::empty({B, 4 * H}, opts);
  at::Tensor w_hh_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meprop_lstm_forward", [&] {
    using T = scalar_t;
    T* gp = gates.data_ptr<T>();
    T* op = output.data_ptr<T>();
    T* cp = cells.data_ptr<T>();
    T* hp = h.data_ptr<T>();
    T* cc = c.data_ptr<T>();
    const T* ghp = gh.data_ptr<T>();
    for (int64_t t = 0; t < T_; ++t) {
      at::mm_out(gh, h, w_hh_t);  // (B, 4h)
      auto step = [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          if (t >= len[b]) continue;  // past the end: the state is carried, the output stays 0
          T* g = gp + (b * T_ + t) * 4 * H;
          lstm_cell(g, ghp + b * 4 * H, cc + b * H, hp + b * H, H);
          std::memcpy(op + (b * T_ + t) * H, hp + b * H, H * sizeof(T));
          std::memcpy(cp + (b * T_ + t) * H, cc + b * H, H * sizeof(T));
        }
      };
      if (B * H < 8192) step(0, B);
      else at::parallel_for(0, B, std::max<int64_t>(1, 8192 / H), step);
    }
  });
  return {output, h, c, gates, cells};
}

// Returns grad_x (B, T, in) [or (0,)], grad_h0, grad_c0 (B, h), row_index (U,), the
// touched rows of grad W_ih (U, in) and grad W_hh (U, h) [or dense (4h, .) with
// dense_weight], and the bias gradient (4h,) (the same for b_ih and b_hh).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_backward(
    const at::Tensor& grad_output_in, const at::Tensor& grad_hn_in, const at::Tensor& grad_cn_in,
    const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& c0_in, const at::Tensor& w_ih_in,
    const at::Tensor& w_hh_in, const at::Tensor& output_in, const at::Tensor& gates_in, const at::Tensor& cells_in,
    const std::optional<at::Tensor>& lengths, int64_t k, bool need_input, bool dense_bias, bool dense_weight) {
  check_lstm_operands(x_in, h0_in, c0_in, w_ih_in, w_hh_in);
  const int64_t B = x_in.size(0), T_ = x_in.size(1), I = x_in.size(2), H = w_hh_in.size(1), G = 4 * H;
  TORCH_CHECK(k >= 1, "meprop::lstm_backward: k must be >= 1");
  k = std::min(k, G);
  auto go = grad_output_in.contiguous();
  auto x = x_in.contiguous(), h0 = h0_in.contiguous(), c0 = c0_in.contiguous();
  auto w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  auto out = output_in.contiguous(), gates = gates_in.contiguous(), cells = cells_in.contiguous();
  auto opts = x.options();
  auto lopts = opts.dtype(at::kLong);
  auto len = read_lengths(lengths, B, T_);
  const int64_t R = B * T_;
  at::Tensor dh = grad_hn_in.contiguous().clone();
  at::Tensor dc = grad_cn_in.contiguous().clone();
  at::Tensor grad_x = need_input ? at::empty({B, T_, I}, opts) : at::empty({0}, opts);
  at::Tensor grad_bias = at::zeros({G}, opts);
  at::Tensor row_index = at::empty({0}, lopts);
  at::Tensor rows_ih, rows_hh;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meprop_lstm_backward", [&] {
    using T = scalar_t;
    std::vector<int64_t> idx(std::max<int64_t>(R * k, 1));
    std::vector<T> val(std::max<int64_t>(R * k, 1));
    std::vector<int64_t> cnt(R, 0);
    const T* gop = go.data_ptr<T>();
    const T* gp = gates.data_ptr<T>();
    const T* cp = cells.data_ptr<T>();
    const T* c0p = c0.data_ptr<T>();
    const T* whh = w_hh.data_ptr<T>();
    T* dhp = dh.data_ptr<T>();
    T* dcp = dc.data_ptr<T>();
    at::Tensor dense_sum = dense_bias ? at::zeros({B, G}, opts) : at::Tensor();
    T* dsp = dense_bias ? dense_sum.data_ptr<T>() : nullptr;
    for (int64_t t = T_ - 1; t >= 0; --t) {
      auto step = [&](int64_t b0, int64_t b1) {
        SelectScratch<T> s(G, k);
        std::vector<T> dG(G), dhb(H);
        for (int64_t b = b0; b < b1; ++b) {
          if (t >= len[b]) continue;  // state carried through: dh, dc pass unchanged
          const int64_t r = b * T_ + t;
          for (int64_t j = 0; j < H; ++j) dhb[j] = dhp[b * H + j] + gop[r * H + j];
          const T* c_prev = t > 0 ? cp + (r - 1) * H : c0p + b * H;
          lstm_cell_grad(gp + r * G, cp + r * H, c_prev, dhb.data(), dcp + b * H, dG.data(), H);
          if (dsp)
            for (int64_t j = 0; j < G; ++j) dsp[b * G + j] += dG[j];
          select_row(dG.data(), G, k, idx.data() + r * k, val.data() + r * k, s);
          cnt[r] = k;
          // dh_{t-1} = sum of the kept gate gradients times their rows of W_hh
          for (int64_t c0 = 0; c0 < H; c0 += kTile<T>)
            gather_rows(idx.data() + r * k, val.data() + r * k, nullptr, k, 0, 1, whh, H, dhp + b * H, 0, c0,
                        std::min(kTile<T>, H - c0));
        }
      };
      if (B < 4) step(0, B);
      else at::parallel_for(0, B, 2, step);
    }
    if (dense_bias) grad_bias = dense_sum.sum(0);
    // Everything else is a per-example backward over the B*T (sequence, step) rows with
    // the selection made above.
    Transposed<T> tr = transpose_selection(idx.data(), val.data(), cnt.data(), R, k, G);
    const int64_t U = (int64_t)tr.touched.size();
    if (!dense_bias) {
      T* gb = grad_bias.data_ptr<T>();
      for (int64_t u = 0; u < U; ++u) {
        T sum = 0;
        for (int64_t e = tr.offsets[u]; e < tr.offsets[u + 1]; ++e) sum += tr.value[e];
        gb[tr.touched[u]] = sum;
      }
    }
    if (need_input && R > 0) {
      T* gx = grad_x.data_ptr<T>();
      const T* wih = w_ih.data_ptr<T>();
      for_tiles(I, R, R * k * I, kTile<T>, [&](int64_t r0, int64_t r1, int64_t c0, int64_t l) {
        gather_rows(idx.data(), val.data(), cnt.data(), k, r0, r1, wih, I, gx, I, c0, l);
      });
    }
    row_index = at::empty({U}, lopts);
    std::copy(tr.touched.begin(), tr.touched.end(), row_index.data_ptr<int64_t>());
    rows_ih = dense_weight ? at::zeros({G, I}, opts) : at::empty({U, I}, opts);
    rows_hh = dense_weight ? at::zeros({G, H}, opts) : at::empty({U, H}, opts);
    if (U > 0) {
      // h_{t-1} of every row: h0 at t = 0, else the previous output (valid steps form a prefix).
      at::Tensor hprev = at::empty({B, T_, H}, opts);
      hprev.select(1, 0).copy_(h0);
      if (T_ > 1) hprev.narrow(1, 1, T_ - 1).copy_(out.narrow(1, 0, T_ - 1));
      const T* hp = hprev.data_ptr<T>();
      const T* xp = x.data_ptr<T>();
      const int64_t* dest = dense_weight ? tr.touched.data() : nullptr;
      T* oih = rows_ih.data_ptr<T>();
      T* ohh = rows_hh.data_ptr<T>();
      const int64_t E = (int64_t)tr.example.size();
      for_tiles(I, U, E * I, kTile<T>, [&](int64_t u0, int64_t u1, int64_t c0, int64_t l) {
        scatter_rows(tr.offsets.data(), tr.example.data(), tr.value.data(), dest, u0, u1, xp, I, oih, I, c0, l);
      });
      for_tiles(H, U, E * H, kTile<T>, [&](int64_t u0, int64_t u1, int64_t c0, int64_t l) {
        scatter_rows(tr.offsets.data(), tr.example.data(), tr.value.data(), dest, u0, u1, hp, H, ohh, H, c0, l);
      });
    }
  });
  if (dense_weight) row_index = at::empty({0}, lopts);
  return {grad_x, dh, dc, row_index, rows_ih, rows_hh, grad_bias};
}

}  // namespace
}  // namespace meprop

TORCH_LIBRARY(meprop, m) {
  m.def(
      "per_example_backward(Tensor dy, Tensor x, Tensor weight, int k, Tensor? indices, bool need_input, "
      "bool need_weight, bool need_bias, bool dense_bias, bool dense_weight, str formulation) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("linear(Tensor input, Tensor weight, Tensor? bias, int k, bool dense_bias, bool sparse_grad) -> Tensor");
  m.def("choose_formulation(int batch, int n, int m, int k) -> int");
  m.def("note_formulation(int code) -> ()");
  m.def("formulation_stats() -> int[]");
  m.def(
      "lstm_forward(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor bias_ih, "
      "Tensor bias_hh, Tensor? lengths) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "lstm_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor x, Tensor h0, Tensor c0, "
      "Tensor weight_ih, Tensor weight_hh, Tensor output, Tensor gates, Tensor cells, Tensor? lengths, int k, "
      "bool need_input, bool dense_bias, bool dense_weight) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(meprop, CPU, m) {
  m.impl("per_example_backward", &meprop::per_example_backward);
  m.impl("linear", &meprop::linear_plain);
  m.impl("lstm_forward", &meprop::lstm_forward);
  m.impl("lstm_backward", &meprop::lstm_backward);
}

TORCH_LIBRARY_IMPL(meprop, Autograd, m) { m.impl("linear", &meprop::linear_autograd); }

TORCH_LIBRARY_IMPL(meprop, CompositeExplicitAutograd, m) {
  m.impl("choose_formulation", &meprop::choose_formulation);
  m.impl("note_formulation", &meprop::note_formulation);
  m.impl("formulation_stats", &meprop::formulation_stats);
}
