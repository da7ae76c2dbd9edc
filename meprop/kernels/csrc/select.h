// Top-k selection by magnitude, one row at a time (select.cpp). Shared by the linear
// backward and the LSTM.
#pragma once

#include "common.h"

namespace meprop {
namespace detail {

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

// Bits of a key's radix digit: the threshold search histograms 2^11 bins per level.
constexpr int kDigitBits = 11;
constexpr int64_t kBins = int64_t(1) << kDigitBits;

// Where a row's k-th largest key lies: `thr` itself, how many keys are above it and how
// many equal it. The k kept entries are those above `thr` and the first `k - above`
// (in index order) of those equal to it.
template <typename K>
struct Threshold {
  K thr;
  int64_t above;
  int64_t equal;
};

// The want-th largest of cand[0:count) (reordered), with `above` the keys already known to
// lie above every candidate: the last step of both threshold searches.
template <typename K>
MEPROP_INLINE Threshold<K> threshold_among(K* cand, int64_t count, int64_t want, int64_t above) {
  std::nth_element(cand, cand + (count - want), cand + count);
  const K thr = cand[count - want];
  int64_t equal = 0;
  for (int64_t i = 0; i < count; ++i) {
    above += cand[i] > thr;
    equal += cand[i] == thr;
  }
  return {thr, above, equal};
}

// The k-th largest key of a float32 row[0:n) (16 < n, 1 <= k <= n) by the AVX-512
// quickselect (select_avx512.cpp); scratch holds 3 * (n + 16) keys. Call only when
// vector_select_enabled(): the CPU has AVX-512 and the portable path was not asked for.
Threshold<uint32_t> row_threshold_avx512(const float* row, int64_t n, int64_t k, uint32_t* scratch);
// out[0:n) = the entries of row kept by th (k of them), the rest zero; touched[j] |= 1 for
// each kept j when touched is not null. Same conditions as row_threshold_avx512.
void mask_write_avx512(const float* row, int64_t n, int64_t k, Threshold<uint32_t> th, float* out, uint8_t* touched);
bool vector_select_enabled();

// Scratch space of one thread for selecting k of n.
template <typename T>
struct SelectScratch {
  using K = typename Key<T>::type;
  std::vector<K> keys;          // k (heap) or the candidates of the threshold search
  std::vector<int64_t> pos;     // k (heap)
  std::vector<uint32_t> hist;   // kBins, kept all zero between calls
  std::vector<int64_t> idx;     // k (the heap's selection, for mask_row)
  std::vector<T> val;           // k
  std::vector<uint32_t> split;  // 3 * (n + 16): the AVX-512 quickselect's buffers (float32)
  SelectScratch(int64_t n, int64_t k)
      : keys(std::max(n, k)), pos(k), hist(kBins, 0), idx(std::min(n, k)), val(std::min(n, k)),
        split(std::is_same<T, float>::value && vector_select_enabled() ? 3 * (n + 16) : 0) {}
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
// Ties: among equal magnitudes the lower indices are kept; NaN counts as the largest.
void select_row(const float* row, int64_t n, int64_t k, int64_t* idx, float* val, SelectScratch<float>& s);
void select_row(const double* row, int64_t n, int64_t k, int64_t* idx, double* val, SelectScratch<double>& s);

// out[0:n) = row with every entry but the k kept ones set to zero; touched[j] |= 1 for
// each kept j when touched is not null (the rows of the weight gradient it touches).
// out may be row itself: the row is masked in place.
void mask_row(const float* row, int64_t n, int64_t k, float* out, uint8_t* touched, SelectScratch<float>& s);
void mask_row(const double* row, int64_t n, int64_t k, double* out, uint8_t* touched, SelectScratch<double>& s);

// body(r0, r1) over the rows [0, R) of a (R, n) selection: in blocks on torch's threads
// when there is enough work, else on the calling thread.
template <typename F>
void for_row_blocks(int64_t R, int64_t n, const F& body) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1));
  if (R * n < 32768) body(0, R);
  else at::parallel_for(0, R, grain, body);
}

// Every row of dy (R, n) masked into out (R, n) (may be dy itself), threads over the rows;
// touched (n), when not null, gets a 1 for every column kept by some row.
template <typename T>
void mask_all_rows(const T* dy, int64_t R, int64_t n, int64_t k, T* out, uint8_t* touched) {
  // one touched vector per thread (at::get_thread_num() is 0 outside a parallel region),
  // OR-ed together at the end: no atomics in the row loop
  std::vector<std::vector<uint8_t>> flags(touched ? at::get_num_threads() : 0, std::vector<uint8_t>(n, 0));
  for_row_blocks(R, n, [&](int64_t r0, int64_t r1) {
    SelectScratch<T> s(n, k);
    uint8_t* mine = touched ? flags[at::get_thread_num()].data() : nullptr;
    for (int64_t r = r0; r < r1; ++r) mask_row(dy + r * n, n, k, out + r * n, mine, s);
  });
  for (const auto& f : flags)
    for (int64_t j = 0; j < n; ++j) touched[j] |= f[j];
}

// Every row of dy (R, n): idx, val (R, k), threads over the rows.
template <typename T>
void select_all_rows(const T* dy, int64_t R, int64_t n, int64_t k, int64_t* idx, T* val) {
  for_row_blocks(R, n, [&](int64_t r0, int64_t r1) {
    SelectScratch<T> s(n, k);
    for (int64_t r = r0; r < r1; ++r) select_row(dy + r * n, n, k, idx + r * k, val + r * k, s);
  });
}

// ------------------------------------------------------------------ sampling (sample.cpp)
// Scratch space of one thread for sampling rows of n entries.
struct SampleScratch {
  std::vector<double> values;   // n: the exact (sorted) solve
  std::vector<int32_t> bits32;  // n: a row's float32 draws
  std::vector<int64_t> bits64;  // n: a row's float64 draws
  explicit SampleScratch(int64_t n) : values(n), bits32(n), bits64(n) {}
};

// Row r of a (R, n) output gradient, row[0:n), sampled (mode="sampled"): entry j kept with
// p_j = min(1, c |row[j]|), sum p = k, and scaled by 1/p_j; the draws are those of (seed, r, j).
// Writes the kept entries as a list (idx, val; returns the count) or, when `out` is set, as
// the masked row out[0:n) (may be row itself), with touched[j] |= 1 for each kept j (touched
// may be null).
int64_t sample_row(const float* row, int64_t n, int64_t k, uint64_t seed, int64_t r, SampleScratch& s,
                   int64_t* idx, float* val, float* out, uint8_t* touched);
int64_t sample_row(const double* row, int64_t n, int64_t k, uint64_t seed, int64_t r, SampleScratch& s,
                   int64_t* idx, double* val, double* out, uint8_t* touched);

}  // namespace detail
}  // namespace meprop
