// meprop::dense_from_rows: the dense (n, m) weight gradient of a row-sparse backward (unified
// meProp, the default layout): the kept rows where they belong and zeros elsewhere, each row
// of the result written once. The PyTorch path (zeros, then index_copy_) writes the kept rows
// twice and fills with regular stores; here each kept row is copied straight into place and
// the zero runs between them are written once, with streaming stores when the result is
// larger than the last-level cache.
#include "common.h"

#include <unistd.h>

#include <limits>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace meprop {
namespace detail {
namespace {

// bytes of zeros at dst. On x86-64, streaming stores (SSE2, every x86-64 CPU): a gradient of
// tens of MB does not fit the caches, and a regular store first reads the line it writes.
void zero_streaming(char* dst, size_t bytes) {
#if defined(__x86_64__)
  const size_t head = std::min(bytes, size_t((16 - reinterpret_cast<uintptr_t>(dst) % 16) % 16));
  std::memset(dst, 0, head);
  dst += head;
  bytes -= head;
  const __m128i zero = _mm_setzero_si128();
  for (; bytes >= 64; bytes -= 64, dst += 64) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst), zero);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 16), zero);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 32), zero);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 48), zero);
  }
#endif
  std::memset(dst, 0, bytes);
}

// The machine's last-level cache in bytes, asked at run time (unknown: the largest size_t).
size_t last_level_cache_bytes() {
  static const size_t cache_bytes = [] {
    long size = -1;
#if defined(_SC_LEVEL3_CACHE_SIZE)
    size = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (size <= 0) size = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return size > 0 ? size_t(size) : std::numeric_limits<size_t>::max();
  }();
  return cache_bytes;
}

// Orders the streaming stores before what follows (the result is read by other threads).
void fence_streaming() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

// out (n, m) with rows[u] at row_index[u] (sorted, unique, in [0, n)) and zero rows elsewhere.
// The zeros are written with streaming stores when the result is larger than stream_above
// bytes; -1: the last-level cache, where a larger result could not stay for its reader.
at::Tensor dense_from_rows(const at::Tensor& row_index_in, const at::Tensor& rows_in, int64_t n,
                           int64_t stream_above) {
  TORCH_CHECK(row_index_in.dim() == 1 && row_index_in.scalar_type() == at::kLong,
              "meprop::dense_from_rows: row_index must be a 1-D int64 tensor, got ", row_index_in.scalar_type(),
              " of shape ", row_index_in.sizes());
  TORCH_CHECK(rows_in.dim() == 2 && rows_in.size(0) == row_index_in.size(0),
              "meprop::dense_from_rows: rows must be (U, m) with U = row_index's length ", row_index_in.size(0),
              ", got ", rows_in.sizes());
  TORCH_CHECK(row_index_in.device().is_cpu() && rows_in.device().is_cpu(),
              "meprop::dense_from_rows: CPU tensors only");
  TORCH_CHECK(n >= 0, "meprop::dense_from_rows: n must be >= 0, got ", n);
  TORCH_CHECK(stream_above >= -1, "meprop::dense_from_rows: stream_above must be -1 (the last-level cache) or a ",
              "size in bytes, got ", stream_above);
  const auto row_index = row_index_in.contiguous();
  const auto rows = rows_in.contiguous();
  const int64_t U = row_index.numel(), m = rows.size(1);
  const int64_t* idx = row_index.data_ptr<int64_t>();
  for (int64_t u = 0; u < U; ++u)
    TORCH_CHECK(idx[u] >= 0 && idx[u] < n && (u == 0 || idx[u] > idx[u - 1]),
                "meprop::dense_from_rows: row_index must be sorted, unique and in [0, ", n, "); entry ", u,
                " is ", idx[u]);
  at::Tensor out = at::empty({n, m}, rows.options());
  if (n == 0 || m == 0) return out;
  const size_t row_bytes = size_t(m) * rows.element_size();
  const auto* src = static_cast<const char*>(rows.data_ptr());
  auto* dst = static_cast<char*>(out.data_ptr());
  const size_t threshold = stream_above < 0 ? last_level_cache_bytes() : size_t(stream_above);
  const bool streaming = size_t(n) * row_bytes > threshold;
  // Threads over blocks of output rows (torch's grain in elements); each block walks the
  // kept rows that fall in it.
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / m);
  at::parallel_for(0, n, grain, [&](int64_t r0, int64_t r1) {
    int64_t u = std::lower_bound(idx, idx + U, r0) - idx;
    int64_t r = r0;
    while (r < r1) {
      const int64_t next = u < U ? std::min(idx[u], r1) : r1;  // the next kept row (or the block end)
      if (next > r) {
        char* zeros = dst + r * row_bytes;
        const size_t bytes = size_t(next - r) * row_bytes;
        if (streaming) zero_streaming(zeros, bytes);
        else std::memset(zeros, 0, bytes);
      }
      r = next;
      if (r < r1) {  // row r is kept: rows[u]
        std::memcpy(dst + r * row_bytes, src + u * row_bytes, row_bytes);
        ++r;
        ++u;
      }
    }
    if (streaming) fence_streaming();
  });
  return out;
}

}  // namespace
}  // namespace detail
}  // namespace meprop

TORCH_LIBRARY_FRAGMENT(meprop, m) { m.def("dense_from_rows(Tensor row_index, Tensor rows, int n, int stream_above=-1) -> Tensor"); }

TORCH_LIBRARY_IMPL(meprop, CPU, m) { m.impl("dense_from_rows", &meprop::detail::dense_from_rows); }
