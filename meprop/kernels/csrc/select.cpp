// meprop::select_rows: the k largest-magnitude entries of each row of a (R, n) tensor,
// in ascending index order (paper, Section 2: top-k of |dy| per example). The row
// selection itself (a threshold heap for small k, otherwise the k-th largest key by the
// AVX-512 quickselect of select_avx512.cpp or a radix select) is shared with the linear
// backward and the LSTM through select.h.
#include "select.h"

namespace meprop {
namespace detail {
namespace {

// Histogram of the digits (key >> shift) & (kBins - 1) of keys[0:count) (read through
// `key_at`), then the bin that holds the want-th largest: returns the bin, and through
// `above` adds the number of keys in higher bins. hist is all zero on entry and on exit.
template <typename K, typename KeyAt>
MEPROP_INLINE int64_t find_bin(const KeyAt& key_at, int64_t count, int shift, int64_t want, uint32_t* hist,
                               int64_t& above) {
  int64_t lo = kBins - 1, hi = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t d = int64_t((key_at(i) >> shift) & K(kBins - 1));
    ++hist[d];
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  int64_t bin = lo;
  if (want <= count / 2) {  // walk down from the largest digit
    int64_t cum = 0;
    for (int64_t d = hi; d >= lo; --d) {
      if (cum + hist[d] >= want) { bin = d; break; }
      cum += hist[d];
    }
    above += cum;
  } else {  // walk up from the smallest: the bin where more than count - want lie at or below
    int64_t cum = 0;
    for (int64_t d = lo; d <= hi; ++d) {
      cum += hist[d];
      if (cum > count - want) { bin = d; break; }
    }
    above += count - cum;
  }
  std::fill(hist + lo, hist + hi + 1, 0u);
  return bin;
}

// The k-th largest key of row[0:n) (1 <= k <= n): the AVX-512 quickselect for float32
// where it is in use (the scratch was sized for it), else a radix select over
// kDigitBits-bit digits, from the top bits down, each level keeping only the keys of the
// bin that holds it.
template <typename T>
MEPROP_INLINE Threshold<typename Key<T>::type> row_threshold_impl(const T* row, int64_t n, int64_t k,
                                                                 SelectScratch<T>& s) {
  using K = typename Key<T>::type;
  // Fewer than k nonzero entries (after a ReLU, most rows when k/n is near the active
  // fraction): every nonzero is kept and the threshold is zero; no search.
  const int64_t nonzero = count_above(row, 0, n, K(0));
  if (nonzero < k) return {K(0), nonzero, n - nonzero};
  if constexpr (std::is_same<T, float>::value)
    if (n > 16 && !s.split.empty()) return row_threshold_avx512(row, n, k, s.split.data());
  constexpr int kKeyBits = int(sizeof(K) * 8) - 1;  // the sign bit is always clear
  int shift = kKeyBits - kDigitBits;
  int64_t above = 0;
  const int64_t bin = find_bin<K>([&](int64_t i) { return Key<T>::of(row[i]); }, n, shift, k, s.hist.data(), above);
  K* cand = s.keys.data();
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {  // the keys of that bin
    const K key = Key<T>::of(row[i]);
    cand[count] = key;
    count += int64_t(key >> shift) == bin;
  }
  int64_t want = k - above;  // the threshold is the want-th largest candidate
  // One key in the whole bin (exact zeros after a ReLU, say): it is the threshold.
  if (std::all_of(cand, cand + count, [&](K key) { return key == cand[0]; })) return {cand[0], above, count};
  while (count > 64 && shift > 0) {
    shift = std::max(0, shift - kDigitBits);
    const int64_t before = above;
    const int64_t b = find_bin<K>([&](int64_t i) { return cand[i]; }, count, shift, want, s.hist.data(), above);
    int64_t kept = 0;
    for (int64_t i = 0; i < count; ++i) {
      const K key = cand[i];
      cand[kept] = key;
      kept += int64_t((key >> shift) & K(kBins - 1)) == b;
    }
    count = kept;
    want -= above - before;
  }
  return threshold_among(cand, count, want, above);
}

// The k largest-magnitude entries of row[0:n), written in ascending index order.
// Ties: among equal magnitudes the lower indices are kept.
template <typename T>
MEPROP_INLINE void select_row_impl(const T* row, int64_t n, int64_t k, int64_t* idx, T* val,
                                   SelectScratch<T>& s) {
  using K = typename Key<T>::type;
  if (!is_sparse(k, n, 1)) {  // the row keeps every entry
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
  // The k-th largest key, then one ordered pass (branch-free: the write always happens,
  // the cursor moves when the entry is kept).
  const Threshold<K> th = row_threshold_impl(row, n, k, s);
  int64_t ties = k - th.above;
  int64_t t = 0;
  for (int64_t i = 0; i < n && t < k; ++i) {
    const K key = Key<T>::of(row[i]);
    const bool eq = key == th.thr;
    const bool keep = (key > th.thr) | (eq & (ties > 0));
    ties -= eq & keep;
    idx[t] = i;
    val[t] = row[i];
    t += keep;
  }
}

template <typename T>
MEPROP_INLINE void mask_row_impl(const T* row, int64_t n, int64_t k, T* out, uint8_t* touched,
                                 SelectScratch<T>& s) {
  using K = typename Key<T>::type;
  if (!is_sparse(k, n, 1)) {  // the row keeps every entry
    std::memcpy(out, row, n * sizeof(T));
    if (touched) std::memset(touched, 1, n);
    return;
  }
  if (k * 16 <= n) {  // few kept: the heap's positions, scattered into a zero row
    int64_t* idx = s.idx.data();
    T* val = s.val.data();
    select_row_impl(row, n, k, idx, val, s);
    std::memset(out, 0, n * sizeof(T));
    for (int64_t t = 0; t < k; ++t) out[idx[t]] = val[t];
    if (touched)
      for (int64_t t = 0; t < k; ++t) touched[idx[t]] = 1;
    return;
  }
  const Threshold<K> th = row_threshold_impl(row, n, k, s);
  if constexpr (std::is_same<T, float>::value)
    if (!s.split.empty()) return mask_write_avx512(row, n, k, th, out, touched);
  const K thr = th.thr;
  // One pass in chunks of 64: a chunk whose entries equal to thr all fit in the ties still
  // to keep takes every key >= thr, a chunk after the ties are used up every key > thr,
  // i.e. >= thr + 1 (keys are integers below the top bit: no overflow); both vectorise.
  // Only the chunk where the ties run out goes entry by entry, in index order. (After a
  // ReLU, half a row can be exact zeros tied at the threshold.)
  int64_t ties = k - th.above;
  for (int64_t i0 = 0; i0 < n; i0 += 64) {
    const int64_t i1 = std::min(n, i0 + 64);
    int64_t eq = 0;
    for (int64_t i = i0; i < i1; ++i) eq += Key<T>::of(row[i]) == thr;
    const bool all_equal_kept = eq <= ties;
    if (all_equal_kept || ties == 0) {
      const K low = all_equal_kept ? thr : K(thr + 1);
      if (touched)  // before the write: out may be row itself (masked in place)
        for (int64_t i = i0; i < i1; ++i) touched[i] |= uint8_t(Key<T>::of(row[i]) >= low);
      for (int64_t i = i0; i < i1; ++i) out[i] = Key<T>::of(row[i]) >= low ? row[i] : T(0);
      if (all_equal_kept) ties -= eq;
    } else {
      for (int64_t i = i0; i < i1; ++i) {
        const K key = Key<T>::of(row[i]);
        const bool take = (key > thr) | ((key == thr) & (ties > 0));
        ties -= take & (key == thr);
        out[i] = take ? row[i] : T(0);
        if (touched) touched[i] |= uint8_t(take);
      }
    }
  }
}

}  // namespace

MEPROP_CLONES void select_row(const float* row, int64_t n, int64_t k, int64_t* idx, float* val, SelectScratch<float>& s) {
  select_row_impl(row, n, k, idx, val, s);
}
MEPROP_CLONES void select_row(const double* row, int64_t n, int64_t k, int64_t* idx, double* val, SelectScratch<double>& s) {
  select_row_impl(row, n, k, idx, val, s);
}
MEPROP_CLONES void mask_row(const float* row, int64_t n, int64_t k, float* out, uint8_t* touched,
                            SelectScratch<float>& s) {
  mask_row_impl(row, n, k, out, touched, s);
}
MEPROP_CLONES void mask_row(const double* row, int64_t n, int64_t k, double* out, uint8_t* touched,
                            SelectScratch<double>& s) {
  mask_row_impl(row, n, k, out, touched, s);
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
