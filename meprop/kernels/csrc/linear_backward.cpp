// meprop::per_example_backward and meprop::linear: the paper's per-example meProp backward
// of a linear layer (Sun et al. 2017, Section 2), fused: top-k of |dy| per row, grad_input,
// the touched weight-gradient rows (sorted unique) and the bias gradient, in two passes.
// meprop::linear is F.linear whose backward is that op, as a C++ autograd function.
//
// Formulations of the per-example backward (the caller names one, or "auto" for the cost
// model below; meprop/dispatch.py measures them and passes the winner):
//   "gather"        row gathers: grad_input[b] = sum_t v[b,t] W[j[b,t]]; weight row j =
//                   sum over the examples b that kept j of v[b,j] x[b] (rows.h).
//   "masked_gemm"   the kept entries scattered into a zero (B, n) matrix, then GEMMs over the
//                   touched rows (wins when k/n is high enough that gathers lose to a GEMM).
//   "masked_dense"  the same zero (B, n) matrix through the full dense backward (two GEMMs of
//                   dense's own shapes): at most dense's cost plus the selection.

#include <atomic>

#include "linear_context.h"
#include "rows.h"
#include "select.h"

namespace meprop {
namespace detail {

namespace {
std::atomic<int64_t> g_last{-1};
std::atomic<int64_t> g_counts[kNumFormulations];
}  // namespace

void note_formulation(int64_t code) {
  TORCH_CHECK(code >= 0 && code < kNumFormulations, "meprop::note_formulation: unknown code ", code);
  g_last.store(code, std::memory_order_relaxed);
  g_counts[code].fetch_add(1, std::memory_order_relaxed);
}

// Relative cost of one gathered multiply-add against one of a dense GEMM (measured on the
// project's 2-core AMD EPYC, float32; docs/performance.md).
constexpr double kGatherCost = 4.0;

// Gathers: 2*B*k*m multiply-adds at kGatherCost each. Masked GEMMs: B*n*m (grad_input)
// plus B*U*m (the touched rows, U <= min(n, B*k)) at GEMM speed. Below 16 rows a GEMM is a
// GEMV, memory-bound on W, while gathers read only the k rows they need: gathers.
int64_t choose_formulation(int64_t batch, int64_t n, int64_t m, int64_t k) {
  if (batch < 16 || !is_sparse(k, n, batch)) return kGather;
  const double touched = (double)std::min(n, batch * k);
  const double gather = 2.0 * batch * k * m * kGatherCost;
  const double masked = (double)batch * (n + touched) * m;
  return masked < gather ? kMaskedGemm : kGather;
}

namespace {

// [last code (-1: none yet), then the count of each formulation]
std::vector<int64_t> formulation_stats() {
  std::vector<int64_t> out{g_last.load()};
  for (auto& c : g_counts) out.push_back(c.load());
  return out;
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

}  // namespace

// grad_input, the weight-gradient rows and (when asked) the bias gradient from `kept`
// (B, n), the output gradient with every entry but the kept ones zero: GEMMs over the
// touched rows (row_index, U of n; all n for a dense weight gradient) for masked_gemm,
// of dense's own shapes for masked_dense.
void masked_gemms(const at::Tensor& kept, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& row_index,
                  bool masked_dense, bool need_input, bool need_weight, bool sparse_bias, bool dense_weight,
                  at::Tensor& grad_input, at::Tensor& rows, at::Tensor& grad_bias) {
  const int64_t n = kept.size(1);
  if (need_input) at::mm_out(grad_input, kept, weight);
  if (need_weight) {
    const int64_t U = row_index.numel();
    if (dense_weight) at::mm_out(rows, kept.t(), x);
    else if (U == n) rows = kept.t().mm(x);
    // The touched rows, copied out before or after the GEMM, whichever copy is smaller:
    // masked_dense keeps dense's (n, B) x (B, m) unless the (U, m) copy after it is the
    // larger one (B < m: a wide input, small batch, most rows touched).
    else if (masked_dense && kept.size(0) >= x.size(1)) rows = kept.t().mm(x).index_select(0, row_index);
    else rows = kept.index_select(1, row_index).t().mm(x);  // (U, B) x (B, m)
  }
  if (sparse_bias) grad_bias = kept.sum(0);
}

namespace {

// Below the entry checks of its callers (check_backward_operands; `formulation` a code of
// kOpFormulations, -1: the cost model's choice). dy_writable: the masked formulations may zero
// the dropped entries of dy in place rather than write the kept ones into a new (B, n) matrix
// (the caller owns dy and is done with it).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> per_example_backward_impl(
    const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& weight_in, int64_t k,
    const std::optional<at::Tensor>& indices, bool need_input, bool need_weight, bool need_bias,
    bool dense_bias, bool dense_weight, int64_t formulation, bool dy_writable) {
  const int64_t R = dy_in.size(0), n = dy_in.size(1), m = x_in.size(1);
  k = std::min(k, n);
  const int64_t code = formulation < 0 ? choose_formulation(R, n, m, k) : formulation;
  note_formulation(code);
  const bool masked = code == kMaskedGemm;
  const bool masked_dense = code == kMaskedDense;
  auto dy = dy_in.contiguous();
  auto x = x_in.contiguous();
  auto weight = weight_in.contiguous();
  auto opts = dy.options();
  auto lopts = opts.dtype(at::kLong);
  at::Tensor grad_input = need_input ? at::empty({R, m}, opts) : at::empty({0}, opts);
  at::Tensor row_index = at::empty({0}, lopts);
  // A dense weight gradient: the masked formulations' GEMM writes all of it (mm_out), the
  // gathers add into its touched rows (so it starts at zero), and an empty batch leaves it zero.
  const bool weight_by_gemm = (masked || masked_dense) && R > 0;
  at::Tensor rows = !need_weight ? at::empty({0}, opts)
                    : !dense_weight ? at::empty({0, m}, opts)
                    : weight_by_gemm ? at::empty({n, m}, opts)
                                     : at::zeros({n, m}, opts);
  at::Tensor grad_bias = need_bias ? (dense_bias ? dy.sum(0) : at::zeros({n}, opts)) : at::empty({0}, opts);
  if (!(need_input || need_weight || need_bias) || R == 0 || n == 0) return {grad_input, row_index, rows, grad_bias};

  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "meprop_per_example_backward", [&] {
    using T = scalar_t;
    const T* dyp = dy.data_ptr<T>();
    if ((masked || masked_dense) && !indices.has_value()) {
      // The kept entries written straight into a (B, n) matrix by the row thresholds.
      const bool need_rows = need_weight && !dense_weight;
      std::vector<uint8_t> touched(need_rows ? n : 0, 0);
      // In place (dy is the caller's to overwrite, or a contiguous copy of it), the masked
      // write touches only lines it has just read: no second (B, n) buffer to bring into
      // cache (measured: what keeps the k/n = 50% backward level with dense).
      at::Tensor kept = dy_writable || !dy.is_same(dy_in) ? dy : at::empty({R, n}, opts);
      mask_all_rows(dyp, R, n, k, kept.data_ptr<T>(), need_rows ? touched.data() : nullptr);
      if (need_rows) {
        std::vector<int64_t> names;
        for (int64_t j = 0; j < n; ++j)
          if (touched[j]) names.push_back(j);
        row_index = at::empty({(int64_t)names.size()}, lopts);
        std::copy(names.begin(), names.end(), row_index.data_ptr<int64_t>());
      }
      masked_gemms(kept, x, weight, row_index, masked_dense, need_input, need_weight, need_bias && !dense_bias,
                   dense_weight, grad_input, rows, grad_bias);
      return;
    }
    // Otherwise the kept entries as (B, k) index and value lists.
    at::Tensor idx_t = at::empty({R, k}, lopts);
    at::Tensor val_t = at::empty({R, k}, opts);
    int64_t* idx = idx_t.data_ptr<int64_t>();
    T* val = val_t.data_ptr<T>();
    if (indices.has_value()) {
      auto given = indices->contiguous();
      TORCH_CHECK(given.scalar_type() == at::kLong && given.dim() == 2 && given.size(0) == R && given.size(1) == k,
                  "meprop::per_example_backward: indices must be int64 (B, k), got ", given.sizes());
      take_given(dyp, given.data_ptr<int64_t>(), R, n, k, idx, val);
    } else {
      select_all_rows(dyp, R, n, k, idx, val);
    }
    // masked_dense needs the touched rows only to name them (a row-sparse weight gradient).
    const bool need_rows = masked_dense ? (need_weight && !dense_weight) : (need_weight || (need_bias && !dense_bias));
    Transposed<T> tr;
    if (need_rows) tr = transpose_selection(idx, val, (const int64_t*)nullptr, R, k, n);
    const int64_t U = (int64_t)tr.touched.size();
    if (need_bias && !dense_bias && !masked_dense) {
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
    if (masked || masked_dense) {  // given indices (random mode): scattered into a zero matrix
      at::Tensor kept = at::zeros({R, n}, opts);
      T* kp = kept.data_ptr<T>();
      for (int64_t r = 0; r < R; ++r)
        for (int64_t t = 0; t < k; ++t) kp[r * n + idx[r * k + t]] = val[r * k + t];
      masked_gemms(kept, x, weight, row_index, masked_dense, need_input, need_weight,
                   masked_dense && need_bias && !dense_bias, dense_weight, grad_input, rows, grad_bias);
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> per_example_backward(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight, int64_t k,
    const std::optional<at::Tensor>& indices, bool need_input, bool need_weight, bool need_bias,
    bool dense_bias, bool dense_weight, c10::string_view formulation) {
  constexpr const char* op = "meprop::per_example_backward";
  check_backward_operands(op, dy, x, weight, k);
  const int64_t code = formulation_code(op, formulation);
  return per_example_backward_impl(dy, x, weight, k, indices, need_input, need_weight, need_bias, dense_bias,
                                   dense_weight, code, /*dy_writable=*/false);
}

// Whether a backward may overwrite its incoming gradient: a dense contiguous tensor that
// nothing else holds. The only references are then the autograd node's list of incoming
// gradients and the copy passed to Function::backward (kNodeRefs), and no other tensor
// shares its storage. A hook that kept the gradient, a gradient the caller passed in
// (Tensor.backward(g), autograd.grad(..., grad_outputs)) or a view of it elsewhere each add
// a reference, and the gradient is then left as it is. (AccumulateGrad makes the same check
// before it steals a gradient.)
constexpr int64_t kNodeRefs = 2;
bool owned_by_backward(const at::Tensor& grad) {
  return grad.defined() && grad.layout() == at::kStrided && grad.has_storage() && grad.is_contiguous() &&
         grad.use_count() <= kNodeRefs && grad.storage().use_count() == 1;
}

// ------------------------------------------------------------------ meprop::linear
// The op's entry checks (at::linear checks the shapes and dtypes).
void check_linear_arguments(const at::Tensor& input, const at::Tensor& weight, int64_t k, int64_t formulation) {
  TORCH_CHECK(input.device().is_cpu() && weight.device().is_cpu(), "meprop::linear: CPU tensors only");
  TORCH_CHECK(k >= 1, "meprop::linear: k must be >= 1, got ", k);
  check_formulation_code("meprop::linear", formulation);
}

// F.linear whose backward is the per-example meProp backward above, as a C++ autograd
// function: the eager backward runs without Python (its fixed cost is what decides the
// small shapes of the paper: batch 1 and 10 of a 500-wide layer).
class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, int64_t k, bool dense_bias, bool sparse_grad,
                            int64_t formulation) {
    check_linear_arguments(input, weight, k, formulation);  // now: the backward trusts them
    save_linear_context(ctx, input, weight, bias, k, dense_bias, sparse_grad);
    ctx->saved_data["formulation"] = formulation;
    return at::linear(input, weight, bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const LinearContext c = load_linear_context(ctx);
    const at::Tensor &input = c.input, &weight = c.weight;
    const int64_t k = c.k, n = c.n, m = c.m, batch = c.batch;
    const bool dense_bias = c.dense_bias, sparse_grad = c.sparse_grad;
    const bool need_input = c.need_input, need_weight = c.need_weight, need_bias = c.need_bias;
    const int64_t formulation = ctx->saved_data["formulation"].toInt();
    const bool dy_owned = owned_by_backward(grads[0]);  // before reshape adds a view of it
    at::Tensor dy = grads[0].reshape({batch, n});
    at::Tensor x = input.reshape({batch, m});
    at::Tensor gi, gw, gb;
    if (at::GradMode::is_enabled()) {
      // create_graph=True: the kernel's results would be constants (second-order terms dropped).
      // The same backward in differentiable ATen ops: dy masked to its top-k per row, then the
      // dense backward (as meprop/_impl/masked_backward.py does for the Python paths).
      at::Tensor kept = dy, row_index = at::arange(n, dy.options().dtype(at::kLong));
      if (is_sparse(k, n, batch)) {
        at::Tensor idx = std::get<1>(dy.detach().abs().topk(k, 1, true, false));
        at::Tensor mask = at::zeros_like(dy).scatter_(1, idx, 1.0);  // (B, n)
        kept = dy * mask;
        row_index = mask.sum(0).nonzero().squeeze(1);  // (U,): a kept zero still touches its row
      }
      if (need_input) gi = kept.mm(weight).reshape(input.sizes());
      if (need_weight) gw = sparse_grad ? row_sparse(kept.t().mm(x), row_index) : kept.t().mm(x);
      if (need_bias) gb = (dense_bias ? dy : kept).sum(0);
      return {gi, gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    if (!is_sparse(k, n, batch)) {
      note_formulation(kDense);
      if (need_input) gi = dy.mm(weight).reshape(input.sizes());
      // COO whenever asked: every row is kept at k >= n (and none of an empty batch is dropped)
      if (need_weight) gw = sparse_grad ? row_sparse(dy.t().mm(x), at::arange(n, dy.options().dtype(at::kLong))) : dy.t().mm(x);
      if (need_bias) gb = dy.sum(0);
    } else if (need_input || need_weight || need_bias) {
      auto out = per_example_backward_impl(dy, x, weight, k, std::nullopt, need_input, need_weight, need_bias,
                                           dense_bias, !sparse_grad, formulation, dy_owned);
      if (need_input) gi = std::get<0>(out).reshape(input.sizes());
      if (need_weight) gw = sparse_grad ? row_sparse_of(std::get<1>(out), std::get<2>(out), weight.sizes()) : std::get<2>(out);
      if (need_bias) gb = std::get<3>(out);
    }
    return {gi, gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor linear_autograd(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           int64_t k, bool dense_bias, bool sparse_grad, int64_t formulation) {
  return LinearFunction::apply(input, weight, bias, k, dense_bias, sparse_grad, formulation);
}

at::Tensor linear_plain(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        int64_t k, bool dense_bias, bool sparse_grad, int64_t formulation) {
  check_linear_arguments(input, weight, k, formulation);
  return at::linear(input, weight, bias);
}

}  // namespace
}  // namespace detail
}  // namespace meprop

TORCH_LIBRARY_FRAGMENT(meprop, m) {
  m.def(
      "per_example_backward(Tensor dy, Tensor x, Tensor weight, int k, Tensor? indices, bool need_input, "
      "bool need_weight, bool need_bias, bool dense_bias, bool dense_weight, str formulation) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "linear(Tensor input, Tensor weight, Tensor? bias, int k, bool dense_bias, bool sparse_grad, "
      "int formulation=-1) -> Tensor");
  m.def("choose_formulation(int batch, int n, int m, int k) -> int");
  m.def("note_formulation(int code) -> ()");
  m.def("formulation_stats() -> int[]");
}

TORCH_LIBRARY_IMPL(meprop, CPU, m) {
  m.impl("per_example_backward", &meprop::detail::per_example_backward);
  m.impl("linear", &meprop::detail::linear_plain);
}

TORCH_LIBRARY_IMPL(meprop, Autograd, m) { m.impl("linear", &meprop::detail::linear_autograd); }

TORCH_LIBRARY_IMPL(meprop, CompositeExplicitAutograd, m) {
  m.impl("choose_formulation", &meprop::detail::choose_formulation);
  m.impl("note_formulation", &meprop::detail::note_formulation);
  m.impl("formulation_stats", &meprop::detail::formulation_stats);
}
