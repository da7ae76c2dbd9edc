// The vector-cloned row gathers and scatters declared in rows.h.
#include "rows.h"

namespace meprop {
namespace detail {
namespace {

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

}  // namespace

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

}  // namespace detail
}  // namespace meprop
