// meprop::select_rows: the k largest-magnitude entries of each row of a (R, n) tensor,
// in ascending index order (paper, Section 2: top-k of |dy| per example). The row
// selection itself (a threshold heap for small k, quickselect otherwise) is shared with
// the linear backward and the LSTM through select.h.
#include "select.h"

namespace meprop {
namespace detail {
namespace {

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

}  // namespace

MEPROP_CLONES void select_row(const float* row, int64_t n, int64_t k, int64_t* idx, float* val, SelectScratch<float>& s) {
  select_row_impl(row, n, k, idx, val, s);
}
MEPROP_CLONES void select_row(const double* row, int64_t n, int64_t k, int64_t* idx, double* val, SelectScratch<double>& s) {
  select_row_impl(row, n, k, idx, val, s);
}

namespace {

// Returns indices (R, k) int64 and values (R, k) of each row of dy (R, n), k <= n.
std::tuple<at::Tensor, at::Tensor> select_rows(const at::Tensor& dy_in, int64_t k) {
  TORCH_CHECK(dy_in.dim() == 2 && dy_in.device().is_cpu(), "meprop::select_rows: dy must be a 2-D CPU tensor");
  TORCH_CHECK(k >= 1, "meprop::select_rows: k must be >= 1, got ", k);
  const int64_t R = dy_in.size(0), n = dy_in.size(1);
  k = std::min(k, n);
  auto dy = dy_in.contiguous();
  at::Tensor idx = at::empty({R, k}, dy.options().dtype(at::kLong));
  at::Tensor val = at::empty({R, k}, dy.options());
  if (R == 0 || n == 0) return {idx, val};
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "meprop_select_rows", [&] {
    select_all_rows(dy.data_ptr<scalar_t>(), R, n, k, idx.data_ptr<int64_t>(), val.data_ptr<scalar_t>());
  });
  return {idx, val};
}

}  // namespace
}  // namespace detail
}  // namespace meprop

TORCH_LIBRARY_FRAGMENT(meprop, m) { m.def("select_rows(Tensor dy, int k) -> (Tensor, Tensor)"); }

TORCH_LIBRARY_IMPL(meprop, CPU, m) { m.impl("select_rows", &meprop::detail::select_rows); }
