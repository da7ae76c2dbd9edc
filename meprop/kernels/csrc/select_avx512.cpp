// The k-th largest magnitude of a float32 row by a vectorised quickselect (AVX-512), the
// threshold search of select.cpp on CPUs that have it (the radix select is the portable
// path and the reference: both return the same Threshold, checked by the tests), and the
// masked write of a row by that threshold.
//
// Each level picks a pivot from 16 keys sampled across the candidates (the one whose rank
// among them is nearest the wanted key's), then one pass splits the candidates into those
// above and below it with vector compares and compresses; keys equal to the pivot are only
// counted. The side that holds the wanted key becomes the candidates; a pivot equal to it
// ends the search. The candidates are always every key of the row in an interval of
// magnitudes, so the counts above and equal to the threshold are exact.
#include "select.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MEPROP_HAVE_AVX512_SELECT 1
#define MEPROP_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,popcnt")))
#endif

#include <atomic>

namespace meprop {
namespace detail {

#ifdef MEPROP_HAVE_AVX512_SELECT
namespace {

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw");
}

std::atomic<bool> g_enabled{cpu_has_avx512()};

// The pivot for the want-th largest of keys[0:count) (count > 16): of 16 keys at stride
// count / 16, the one whose rank among them is nearest want's. `keys` is null on the first
// level, which reads the row itself.
MEPROP_AVX512 uint32_t sample_pivot(const float* row, const uint32_t* keys, int64_t count, int64_t want) {
  alignas(64) uint32_t s[16];
  const int64_t stride = count / 16;
  for (int i = 0; i < 16; ++i) s[i] = keys ? keys[i * stride] : Key<float>::of(row[i * stride]);
  const __m512i sv = _mm512_load_si512(s);
  // rank[i]: how many of the 16 are above s[i]
  __m512i rank = _mm512_setzero_si512();
  const __m512i one = _mm512_set1_epi32(1);
  for (int j = 0; j < 16; ++j)
    rank = _mm512_mask_add_epi32(rank, _mm512_cmplt_epi32_mask(sv, _mm512_set1_epi32(int(s[j]))), rank, one);
  const int target = int((want * 16 - 1) / count);
  const __m512i dist = _mm512_abs_epi32(_mm512_sub_epi32(rank, _mm512_set1_epi32(target)));
  const __mmask16 nearest = _mm512_cmpeq_epi32_mask(dist, _mm512_set1_epi32(_mm512_reduce_min_epi32(dist)));
  return s[__builtin_ctz(nearest)];
}

// Keys of 16 entries at i: of the row (first level, with |.| applied) or of the candidates.
MEPROP_AVX512 inline __m512i load_keys(const float* row, const uint32_t* keys, int64_t i, __mmask16 lanes) {
  if (keys) return _mm512_maskz_loadu_epi32(lanes, keys + i);
  return _mm512_and_si512(_mm512_maskz_loadu_epi32(lanes, row + i), _mm512_set1_epi32(0x7fffffff));
}

}  // namespace

constexpr int kMaxLevels = 48;

MEPROP_AVX512 Threshold<uint32_t> row_threshold_avx512(const float* row, int64_t n, int64_t k, uint32_t* scratch) {
  // three buffers of n + 16 keys: the candidates and the two sides of a split
  uint32_t* buf[3] = {scratch, scratch + (n + 16), scratch + 2 * (n + 16)};
  int in = -1;  // which buffer holds the candidates; -1: the row itself
  int64_t count = n, want = k, above = 0;
  for (int level = 0; count > 16; ++level) {
    // Sampled pivots make each level keep a fraction of the candidates; should a row
    // defeat them level after level, introselect finishes in linear time.
    if (level == kMaxLevels) return threshold_among(buf[in], count, want, above);
    const uint32_t* keys = in < 0 ? nullptr : buf[in];
    const uint32_t pivot = sample_pivot(row, keys, count, want);
    const __m512i pv = _mm512_set1_epi32(int(pivot));
    const int hi_side = in < 0 ? 0 : (in + 1) % 3;  // two buffers other than the candidates'
    const int lo_side = in < 0 ? 1 : (in + 2) % 3;
    uint32_t* hi = buf[hi_side];
    uint32_t* lo = buf[lo_side];
    int64_t n_hi = 0, n_lo = 0;
    for (int64_t i = 0; i < count; i += 16) {
      const __mmask16 lanes = count - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (count - i)) - 1);
      const __m512i v = load_keys(row, keys, i, lanes);
      const __mmask16 gt = _mm512_mask_cmpgt_epi32_mask(lanes, v, pv);
      const __mmask16 lt = _mm512_mask_cmplt_epi32_mask(lanes, v, pv);
      _mm512_storeu_si512(hi + n_hi, _mm512_maskz_compress_epi32(gt, v));
      _mm512_storeu_si512(lo + n_lo, _mm512_maskz_compress_epi32(lt, v));
      n_hi += __builtin_popcount(gt);
      n_lo += __builtin_popcount(lt);
    }
    const int64_t equal = count - n_hi - n_lo;
    if (want <= n_hi) {
      in = hi_side;
      count = n_hi;
    } else if (want <= n_hi + equal) {
      return {pivot, above + n_hi, equal};
    } else {
      above += n_hi + equal;
      want -= n_hi + equal;
      in = lo_side;
      count = n_lo;
    }
  }
  uint32_t last[16];
  for (int64_t i = 0; i < count; ++i) last[i] = in < 0 ? Key<float>::of(row[i]) : buf[in][i];
  return threshold_among(last, count, want, above);
}

// The masked write of one row, 16 entries per step: out[i] = row[i] where kept, else 0, and
// touched[i] |= kept. Kept: every key above th.thr, then the keys equal to it in index
// order until k are kept (k - th.above of them).
MEPROP_AVX512 void mask_write_avx512(const float* row, int64_t n, int64_t k, Threshold<uint32_t> th, float* out,
                                     uint8_t* touched) {
  const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
  const __m512i thr = _mm512_set1_epi32(int(th.thr));
  const __m128i one = _mm_set1_epi8(1);
  int64_t ties = k - th.above;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512i v = _mm512_maskz_loadu_epi32(lanes, row + i);
    const __m512i key = _mm512_and_si512(v, magnitude);
    __mmask16 keep = _mm512_mask_cmpgt_epu32_mask(lanes, key, thr);
    if (ties > 0) {
      const __mmask16 eq = _mm512_mask_cmpeq_epu32_mask(lanes, key, thr);
      const int64_t count = __builtin_popcount(eq);
      if (count <= ties) {
        keep |= eq;
        ties -= count;
      } else {  // the ties run out here: the first `ties` of them, in index order
        __mmask16 dropped = eq;
        for (int64_t t = 0; t < ties; ++t) dropped &= __mmask16(dropped - 1);
        keep |= __mmask16(eq ^ dropped);
        ties = 0;
      }
    }
    _mm512_mask_storeu_epi32(out + i, lanes, _mm512_maskz_mov_epi32(keep, v));
    if (touched) {
      const __m128i t = _mm_maskz_loadu_epi8(lanes, touched + i);
      _mm_mask_storeu_epi8(touched + i, lanes, _mm_or_si128(t, _mm_maskz_mov_epi8(keep, one)));
    }
  }
}

bool vector_select_enabled() { return g_enabled.load(std::memory_order_relaxed); }

#else

Threshold<uint32_t> row_threshold_avx512(const float*, int64_t, int64_t, uint32_t*) {
  TORCH_CHECK(false, "meprop: the AVX-512 selection is not compiled in on this platform");
}

void mask_write_avx512(const float*, int64_t, int64_t, Threshold<uint32_t>, float*, uint8_t*) {
  TORCH_CHECK(false, "meprop: the AVX-512 selection is not compiled in on this platform");
}

bool vector_select_enabled() { return false; }

#endif

namespace {

// enable: 1 use the AVX-512 selection where the CPU has it, 0 the portable radix select,
// -1 leave as is. Returns whether the AVX-512 selection is in use now.
bool vector_select(int64_t enable) {
  TORCH_CHECK(enable >= -1 && enable <= 1, "meprop::vector_select: enable must be -1, 0 or 1, got ", enable);
#ifdef MEPROP_HAVE_AVX512_SELECT
  if (enable >= 0) g_enabled.store(enable == 1 && cpu_has_avx512());
#endif
  return vector_select_enabled();
}

}  // namespace
}  // namespace detail
}  // namespace meprop

TORCH_LIBRARY_FRAGMENT(meprop, m) { m.def("vector_select(int enable=-1) -> bool"); }

TORCH_LIBRARY_IMPL(meprop, CompositeExplicitAutograd, m) { m.impl("vector_select", &meprop::detail::vector_select); }
