// meprop's lazy Adam row update: torch.optim.SparseAdam's arithmetic on the touched rows
// of a weight, in place, one pass over the rows of (param, exp_avg, exp_avg_sq[, max]).
//
//   g = rows[i] (negated for maximize); r = row_index[i]
//   weight decay: decoupled p[r] *= 1 - lr*wd, else g += wd * p[r]
//   m[r] = (g - m[r]) * (1 - beta1) + m[r]
//   v[r] = (g*g - v[r]) * (1 - beta2) + v[r]          (amsgrad: vmax[r] = max(vmax[r], v[r]))
//   p[r] += -step_size * (m[r] / (sqrt(v[r] or vmax[r]) + eps))
//
// step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t) comes from the caller (meprop/optim/adam.py),
// which keeps torch's fused Adam on row views as the fallback. Rows are independent (row_index
// is unique), so threads split the rows.
#include "common.h"

namespace meprop {
namespace {

struct RowConstants {
  double sign, b1, b2, shrink, decay, neg_step, eps;
};

// One row of the update; the flags are template parameters so the loop has no branches.
template <typename T, bool kL2, bool kDecoupled, bool kAms>
inline __attribute__((always_inline)) void update_row_impl(T* __restrict p, T* __restrict m,
                                                           T* __restrict v, T* __restrict vmax,
                                                           const T* __restrict g, int64_t cols,
                                                           const RowConstants& c) {
  const T sign = static_cast<T>(c.sign), b1 = static_cast<T>(c.b1), b2 = static_cast<T>(c.b2);
  const T shrink = static_cast<T>(c.shrink), decay = static_cast<T>(c.decay);
  const T neg_step = static_cast<T>(c.neg_step), eps = static_cast<T>(c.eps);
  for (int64_t j = 0; j < cols; ++j) {
    T grad = sign * g[j];
    T param = p[j];
    if constexpr (kDecoupled) param *= shrink;
    if constexpr (kL2) grad += decay * param;
    const T m_new = (grad - m[j]) * b1 + m[j];
    const T v_new = (grad * grad - v[j]) * b2 + v[j];
    m[j] = m_new;
    v[j] = v_new;
    T second = v_new;
    if constexpr (kAms) {
      second = vmax[j] > v_new ? vmax[j] : v_new;
      vmax[j] = second;
    }
    p[j] = param + neg_step * (m_new / (std::sqrt(second) + eps));
  }
}

template <typename T>
inline __attribute__((always_inline)) void update_row_any(T* p, T* m, T* v, T* vmax, const T* g,
                                                          int64_t cols, const RowConstants& c, int flags) {
  switch (flags) {  // bit 0: L2 decay, bit 1: decoupled decay, bit 2: amsgrad
    case 0: return update_row_impl<T, false, false, false>(p, m, v, vmax, g, cols, c);
    case 1: return update_row_impl<T, true, false, false>(p, m, v, vmax, g, cols, c);
    case 2: return update_row_impl<T, false, true, false>(p, m, v, vmax, g, cols, c);
    case 4: return update_row_impl<T, false, false, true>(p, m, v, vmax, g, cols, c);
    case 5: return update_row_impl<T, true, false, true>(p, m, v, vmax, g, cols, c);
    default: return update_row_impl<T, false, true, true>(p, m, v, vmax, g, cols, c);
  }
}

MEPROP_CLONES void update_row(float* p, float* m, float* v, float* vmax, const float* g, int64_t cols,
                                  const RowConstants& c, int flags) {
  update_row_any(p, m, v, vmax, g, cols, c, flags);
}
MEPROP_CLONES void update_row(double* p, double* m, double* v, double* vmax, const double* g,
                                  int64_t cols, const RowConstants& c, int flags) {
  update_row_any(p, m, v, vmax, g, cols, c, flags);
}

template <typename T>
void update_rows(T* p, T* m, T* v, T* vmax, const int64_t* index, const T* g, int64_t rows,
                 int64_t cols, double step_size, double lr, double beta1, double beta2, double eps,
                 double wd, bool decoupled, bool maximize) {
  const RowConstants c{maximize ? -1.0 : 1.0, 1 - beta1, 1 - beta2, 1 - lr * wd, wd, -step_size, eps};
  const int flags = (wd != 0 ? (decoupled ? 2 : 1) : 0) | (vmax ? 4 : 0);
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t off = index[i] * cols;
      update_row(p + off, m + off, v + off, vmax ? vmax + off : nullptr, g + i * cols, cols, c, flags);
    }
  });
}

void lazy_adam_rows_(at::Tensor param, at::Tensor exp_avg, at::Tensor exp_avg_sq,
                     const std::optional<at::Tensor>& max_exp_avg_sq, const at::Tensor& row_index,
                     const at::Tensor& rows, double step_size, double lr, double beta1, double beta2,
                     double eps, double weight_decay, bool decoupled, bool maximize) {
  TORCH_CHECK(param.dim() == 2 && param.is_contiguous(), "lazy_adam_rows_: param must be 2-D contiguous");
  for (const at::Tensor* t : {&exp_avg, &exp_avg_sq}) {
    TORCH_CHECK(t->sizes() == param.sizes() && t->is_contiguous() && t->dtype() == param.dtype(),
                "lazy_adam_rows_: optimizer state must be contiguous, of param's shape and dtype");
  }
  if (max_exp_avg_sq) {
    TORCH_CHECK(max_exp_avg_sq->sizes() == param.sizes() && max_exp_avg_sq->is_contiguous() &&
                    max_exp_avg_sq->dtype() == param.dtype(),
                "lazy_adam_rows_: max_exp_avg_sq must be contiguous, of param's shape and dtype");
  }
  TORCH_CHECK(row_index.dim() == 1 && row_index.scalar_type() == at::kLong, "lazy_adam_rows_: row_index must be int64 (U,)");
  auto index = row_index.contiguous();
  auto grads = rows.contiguous();
  TORCH_CHECK(grads.dim() == 2 && grads.size(0) == index.size(0) && grads.size(1) == param.size(1) &&
                  grads.dtype() == param.dtype(),
              "lazy_adam_rows_: rows must be (U, m) of param's dtype");
  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "lazy_adam_rows_", [&] {
    update_rows<scalar_t>(param.data_ptr<scalar_t>(), exp_avg.data_ptr<scalar_t>(),
                          exp_avg_sq.data_ptr<scalar_t>(),
                          max_exp_avg_sq ? max_exp_avg_sq->data_ptr<scalar_t>() : nullptr,
                          index.data_ptr<int64_t>(), grads.data_ptr<scalar_t>(), index.size(0),
                          param.size(1), step_size, lr, beta1, beta2, eps, weight_decay, decoupled, maximize);
  });
}

}  // namespace
}  // namespace meprop

TORCH_LIBRARY_FRAGMENT(meprop, m) {
  m.def(
      "lazy_adam_rows_(Tensor(a!) param, Tensor(b!) exp_avg, Tensor(c!) exp_avg_sq, Tensor(d!)? max_exp_avg_sq, "
      "Tensor row_index, Tensor rows, float step_size, float lr, float beta1, float beta2, float eps, "
      "float weight_decay, bool decoupled, bool maximize) -> ()");
}

TORCH_LIBRARY_IMPL(meprop, CPU, m) { m.impl("lazy_adam_rows_", &meprop::lazy_adam_rows_); }
