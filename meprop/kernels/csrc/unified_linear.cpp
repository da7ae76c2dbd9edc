// meprop::unified_linear: F.linear whose backward is unified meProp (Sun et al. 2017, Section
// 3.3) as a C++ autograd function: one set of k output columns for the whole batch (the top-k
// of the column sums of |dy|), then two small GEMMs over those columns. The same ATen ops, in
// the same order, as the Python path (meprop/functional.py, _unified_backward, and
// meprop/selection.py, column_abs_sum), so both keep the same columns and give the same
// gradients; here the backward runs without Python, whose fixed cost decides small shapes.
#include "common.h"
#include "linear_context.h"

namespace meprop {
namespace detail {
namespace {

// The Python path's block of |dy| (selection.CPU_BLOCK_ELEMENTS): the column sums are
// accumulated over row blocks of at most this many elements (the same additions, in order).
constexpr int64_t kBlockElements = int64_t(1) << 16;

// (k,) sorted indices of the k columns of dy (B, n) with the largest sum of |dy|, accumulated
// in float32 or wider.
at::Tensor unified_columns(const at::Tensor& dy, int64_t k) {
  const auto acc = at::promote_types(dy.scalar_type(), at::kFloat);
  const int64_t B = dy.size(0), n = dy.size(1);
  at::Tensor sums;
  if (dy.numel() <= kBlockElements) {
    sums = dy.abs().sum(0, false, acc);  // (n,)
  } else {
    const int64_t rows = std::max<int64_t>(1, kBlockElements / n);
    sums = at::zeros({n}, dy.options().dtype(acc));
    for (int64_t start = 0; start < B; start += rows)
      sums += dy.slice(0, start, std::min(B, start + rows)).abs().sum(0, false, acc);
  }
  return std::get<0>(std::get<1>(sums.topk(k, 0, true, false)).sort());  // (k,)
}

// The (n, m) weight gradient holding rows (U, m) at row_index (U,) (sorted, unique): COO
// (sparse_grad) or dense, zero elsewhere (meprop::dense_from_rows: each row written once).
at::Tensor weight_grad(const at::Tensor& row_index, const at::Tensor& rows, at::IntArrayRef sizes,
                       bool sparse_grad) {
  if (sparse_grad) return row_sparse_of(row_index, rows, sizes);
  static auto dense_from_rows = c10::Dispatcher::singleton()
                                    .findSchemaOrThrow("meprop::dense_from_rows", "")
                                    .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, int64_t)>();
  return dense_from_rows.call(row_index, rows, sizes[0], -1);
}

class UnifiedLinearFunction : public torch::autograd::Function<UnifiedLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, int64_t k, bool dense_bias, bool sparse_grad) {
    TORCH_CHECK(k >= 1, "meprop::unified_linear: k must be >= 1, got ", k);
    save_linear_context(ctx, input, weight, bias, k, dense_bias, sparse_grad);
    return at::linear(input, weight, bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const LinearContext c = load_linear_context(ctx);
    const at::Tensor &input = c.input, &weight = c.weight;
    const int64_t k = c.k, n = c.n, m = c.m, batch = c.batch;
    const bool dense_bias = c.dense_bias, sparse_grad = c.sparse_grad;
    const bool need_input = c.need_input, need_weight = c.need_weight, need_bias = c.need_bias;
    const at::Tensor dy = grads[0].reshape({batch, n});  // (B, n)
    const at::Tensor x = input.reshape({batch, m});      // (B, m)
    at::Tensor gi, gw, gb;
    const auto none = at::Tensor();
    if (!(need_input || need_weight || need_bias)) return {gi, gw, gb, none, none, none};
    const bool sparse = k < n && batch > 0;
    if (at::GradMode::is_enabled()) {
      // create_graph=True: the kept columns as a mask on dy, then the dense backward in
      // differentiable ops (as meprop/_impl/masked_backward.py does for the Python paths).
      at::Tensor kept = dy, row_index = at::arange(n, dy.options().dtype(at::kLong));
      if (sparse) {
        row_index = unified_columns(dy.detach(), k);
        kept = dy * at::zeros({n}, dy.options()).index_fill(0, row_index, 1).expand_as(dy);
      }
      if (need_input) gi = kept.mm(weight).reshape(input.sizes());
      if (need_weight) {
        gw = kept.t().mm(x);  // (n, m)
        if (sparse_grad) gw = row_sparse(gw, row_index);
      }
      if (need_bias) gb = (dense_bias ? dy : kept).sum(0);
      return {gi, gw, gb, none, none, none};
    }
    if (!sparse) {  // k >= n or an empty batch: F.linear's own backward
      note_formulation(kDense);
      if (need_input) gi = dy.mm(weight).reshape(input.sizes());
      if (need_weight) {
        gw = dy.t().mm(x);  // (n, m); COO of every row when asked
        if (sparse_grad) gw = row_sparse(gw, at::arange(n, dy.options().dtype(at::kLong)));
      }
      if (need_bias) gb = dy.sum(0);
      return {gi, gw, gb, none, none, none};
    }
    note_formulation(kUnified);
    const at::Tensor idx = unified_columns(dy, k);  // (k,) sorted
    const at::Tensor dy_k = dy.index_select(1, idx);  // (B, k)
    if (need_input) gi = dy_k.mm(weight.index_select(0, idx)).reshape(input.sizes());  // (B, m)
    if (need_weight) gw = weight_grad(idx, dy_k.t().mm(x), weight.sizes(), sparse_grad);  // rows (k, m)
    if (need_bias) gb = dense_bias ? dy.sum(0) : at::zeros({n}, dy.options()).index_copy_(0, idx, dy_k.sum(0));
    return {gi, gw, gb, none, none, none};
  }
};

at::Tensor unified_linear_autograd(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, int64_t k, bool dense_bias,
                                   bool sparse_grad) {
  return UnifiedLinearFunction::apply(input, weight, bias, k, dense_bias, sparse_grad);
}

at::Tensor unified_linear_plain(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, int64_t k, bool dense_bias, bool sparse_grad) {
  return at::linear(input, weight, bias);
}

}  // namespace
}  // namespace detail
}  // namespace meprop

TORCH_LIBRARY_FRAGMENT(meprop, m) {
  m.def("unified_linear(Tensor input, Tensor weight, Tensor? bias, int k, bool dense_bias, bool sparse_grad) -> Tensor");
}

TORCH_LIBRARY_IMPL(meprop, CPU, m) { m.impl("unified_linear", &meprop::detail::unified_linear_plain); }

TORCH_LIBRARY_IMPL(meprop, Autograd, m) { m.impl("unified_linear", &meprop::detail::unified_linear_autograd); }
