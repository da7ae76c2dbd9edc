// Row gathers and scatters of the per-example backward (rows.cpp), and the CSR transpose
// of a selection. Shared by the linear backward and the LSTM.
//
//   gather_rows   out[r] = sum_t val[r,t] * src[idx[r,t]]     (grad_input: rows of W)
//   scatter_rows  out[j] = sum over entries of row j: value * x[example]   (weight-gradient
//                 rows, from the selection grouped by output row: each touched row is
//                 written once per column tile)
// Both are blocked over columns (tiles of 256 bytes), so the source rows of a tile stay in
// cache and every thread owns its own output columns (no atomics).
#pragma once

#include "common.h"

namespace meprop {
namespace detail {

// ------------------------------------------------------------------ gathers
// Columns per tile: 256 bytes, i.e. 8 vectors of 32 bytes held as accumulators (8 AVX2 or
// AVX-512VL registers; 16 SSE registers in the baseline clone).
// The vectors are 32 bytes, not 64: in the AVX2 clone GCC lowers a 64-byte vector to two
// halves but builds the scalar broadcast `V{} + v` through the stack, a store-forwarding
// stall per multiply-add row (measured on the project's AVX2 EPYC: the weight-gradient
// scatter of a 784-wide layer, batch 10, k = 20, ran at 1.2 GMAC/s; 6.6 GMAC/s with these).
template <typename T> constexpr int64_t kTile = 256 / sizeof(T);
template <typename T> constexpr int64_t kLanes = 32 / sizeof(T);

// GCC vector extensions: one 32-byte vector, lowered to what the clone's target has.
template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(32))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(32))); };

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
void gather_rows(const int64_t* idx, const float* val, const int64_t* cnt, int64_t k, int64_t r0, int64_t r1,
                 const float* src, int64_t lds, float* out, int64_t ldo, int64_t c0, int64_t len);
void gather_rows(const int64_t* idx, const double* val, const int64_t* cnt, int64_t k, int64_t r0, int64_t r1,
                 const double* src, int64_t lds, double* out, int64_t ldo, int64_t c0, int64_t len);

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
void scatter_rows(const int64_t* offsets, const int64_t* example, const float* value, const int64_t* dest,
                  int64_t u0, int64_t u1, const float* x, int64_t ldx, float* out, int64_t ldo, int64_t c0,
                  int64_t len);
void scatter_rows(const int64_t* offsets, const int64_t* example, const double* value, const int64_t* dest,
                  int64_t u0, int64_t u1, const double* x, int64_t ldx, double* out, int64_t ldo, int64_t c0,
                  int64_t len);

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

}  // namespace detail
}  // namespace meprop
