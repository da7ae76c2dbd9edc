// meprop::lstm_forward and meprop::lstm_backward: MepropLSTM's whole sequence (paper,
// Section 4's POS tagger) as two ops, no Python per time step; the backward keeps the top-k
// of each step's gate gradients (4h) and finishes with a per-example backward over the
// B*T (sequence, step) rows (rows.h). The autograd function is Python (meprop/lstm.py).
#include "rows.h"
#include "select.h"

namespace meprop {
namespace detail {
namespace {

// Fast sigmoid / tanh for float (a Cephes-style exp, ~2 ulp, vectorisable); float64
// uses libm so that k = 4h matches nn.LSTM to float64 precision.
MEPROP_INLINE float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float z = x * 1.44269504088896341f;
  const int32_t ni = (int32_t)(z + (z >= 0.0f ? 0.5f : -0.5f));
  const float nf = (float)ni;
  float r = x - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (ni + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}
MEPROP_INLINE float sigmoid_of(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
MEPROP_INLINE float tanh_of(float x) {
  const float e = exp_approx(-2.0f * std::fabs(x));
  const float t = (1.0f - e) / (1.0f + e);
  return std::copysign(t, x);
}
MEPROP_INLINE double sigmoid_of(double x) { return 1.0 / (1.0 + std::exp(-x)); }
MEPROP_INLINE double tanh_of(double x) { return std::tanh(x); }

// One step of one sequence: gates pre-activations g (4h) -> activated in place; c, h updated.
template <typename T>
MEPROP_INLINE void lstm_cell_impl(T* g, const T* gh, T* c, T* h, int64_t H) {
  for (int64_t j = 0; j < 4 * H; ++j) g[j] += gh[j];
  for (int64_t j = 0; j < H; ++j) g[j] = sigmoid_of(g[j]);
  for (int64_t j = H; j < 2 * H; ++j) g[j] = sigmoid_of(g[j]);
  for (int64_t j = 2 * H; j < 3 * H; ++j) g[j] = tanh_of(g[j]);
  for (int64_t j = 3 * H; j < 4 * H; ++j) g[j] = sigmoid_of(g[j]);
  for (int64_t j = 0; j < H; ++j) {
    const T cn = g[H + j] * c[j] + g[j] * g[2 * H + j];
    c[j] = cn;
    h[j] = g[3 * H + j] * tanh_of(cn);
  }
}
MEPROP_CLONES void lstm_cell(float* g, const float* gh, float* c, float* h, int64_t H) { lstm_cell_impl(g, gh, c, h, H); }
MEPROP_CLONES void lstm_cell(double* g, const double* gh, double* c, double* h, int64_t H) { lstm_cell_impl(g, gh, c, h, H); }

// Gate-gradient of one step of one sequence. dh, dc (h) in; dG (4h) out; dc <- dc_prev.
template <typename T>
MEPROP_INLINE void lstm_cell_grad_impl(const T* g, const T* c, const T* c_prev, const T* dh, T* dc, T* dG, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
    const T tc = tanh_of(c[j]);
    const T dcj = dc[j] + dh[j] * o * (T(1) - tc * tc);
    dG[j] = dcj * gg * i * (T(1) - i);
    dG[H + j] = dcj * c_prev[j] * f * (T(1) - f);
    dG[2 * H + j] = dcj * i * (T(1) - gg * gg);
    dG[3 * H + j] = dh[j] * tc * o * (T(1) - o);
    dc[j] = dcj * f;
  }
}
MEPROP_CLONES void lstm_cell_grad(const float* g, const float* c, const float* cp, const float* dh, float* dc, float* dG, int64_t H) {
  lstm_cell_grad_impl(g, c, cp, dh, dc, dG, H);
}
MEPROP_CLONES void lstm_cell_grad(const double* g, const double* c, const double* cp, const double* dh, double* dc, double* dG, int64_t H) {
  lstm_cell_grad_impl(g, c, cp, dh, dc, dG, H);
}

std::vector<int64_t> read_lengths(const std::optional<at::Tensor>& lengths, int64_t B, int64_t T) {
  std::vector<int64_t> len(B, T);
  if (lengths.has_value() && lengths->defined()) {
    auto l = lengths->to(at::kLong).contiguous();
    TORCH_CHECK(l.numel() == B, "meprop::lstm: lengths must have one entry per sequence");
    const int64_t* lp = l.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK(lp[b] >= 0 && lp[b] <= T, "meprop::lstm: lengths must lie in [0, ", T, "]");
      len[b] = lp[b];
    }
  }
  return len;
}

void check_lstm_operands(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                         const at::Tensor& w_hh) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu(), "meprop::lstm: x must be a (B, T, in) CPU tensor");
  const int64_t B = x.size(0), I = x.size(2), H = w_hh.size(1);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == 4 * H && w_ih.size(1) == I, "meprop::lstm: weight_ih must be (4h, in)");
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == 4 * H, "meprop::lstm: weight_hh must be (4h, h)");
  TORCH_CHECK(h0.sizes() == c0.sizes() && h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H,
              "meprop::lstm: h0 and c0 must be (B, h)");
}

// Returns output (B, T, h), h_n, c_n (B, h), the activated gates (B, T, 4h) and cells (B, T, h).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_forward(
    const at::Tensor& x_in, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh, const std::optional<at::Tensor>& lengths) {
  check_lstm_operands(x_in, h0, c0, w_ih, w_hh);
  const int64_t B = x_in.size(0), T_ = x_in.size(1), I = x_in.size(2), H = w_hh.size(1);
  auto x = x_in.contiguous();
  auto opts = x.options();
  auto len = read_lengths(lengths, B, T_);
  at::Tensor gates = at::empty({B, T_, 4 * H}, opts);
  if (B * T_ > 0) {
    at::Tensor flat = gates.view({B * T_, 4 * H});
    at::addmm_out(flat, b_ih + b_hh, x.view({B * T_, I}), w_ih.t());
  }
  at::Tensor output = at::zeros({B, T_, H}, opts);
  at::Tensor cells = at::zeros({B, T_, H}, opts);
  at::Tensor h = h0.contiguous().clone(), c = c0.contiguous().clone();
  at::Tensor gh = at::empty({B, 4 * H}, opts);
  at::Tensor w_hh_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meprop_lstm_forward", [&] {
    using T = scalar_t;
    T* gp = gates.data_ptr<T>();
    T* op = output.data_ptr<T>();
    T* cp = cells.data_ptr<T>();
    T* hp = h.data_ptr<T>();
    T* cc = c.data_ptr<T>();
    const T* ghp = gh.data_ptr<T>();
    for (int64_t t = 0; t < T_; ++t) {
      at::mm_out(gh, h, w_hh_t);  // (B, 4h)
      auto step = [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          if (t >= len[b]) continue;  // past the end: the state is carried, the output stays 0
          T* g = gp + (b * T_ + t) * 4 * H;
          lstm_cell(g, ghp + b * 4 * H, cc + b * H, hp + b * H, H);
          std::memcpy(op + (b * T_ + t) * H, hp + b * H, H * sizeof(T));
          std::memcpy(cp + (b * T_ + t) * H, cc + b * H, H * sizeof(T));
        }
      };
      if (B * H < 8192) step(0, B);
      else at::parallel_for(0, B, std::max<int64_t>(1, 8192 / H), step);
    }
  });
  return {output, h, c, gates, cells};
}

// Returns grad_x (B, T, in) [or (0,)], grad_h0, grad_c0 (B, h), row_index (U,), the
// touched rows of grad W_ih (U, in) and grad W_hh (U, h) [or dense (4h, .) with
// dense_weight], and the bias gradient (4h,) (the same for b_ih and b_hh).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_backward(
    const at::Tensor& grad_output_in, const at::Tensor& grad_hn_in, const at::Tensor& grad_cn_in,
    const at::Tensor& x_in, const at::Tensor& h0_in, const at::Tensor& c0_in, const at::Tensor& w_ih_in,
    const at::Tensor& w_hh_in, const at::Tensor& output_in, const at::Tensor& gates_in, const at::Tensor& cells_in,
    const std::optional<at::Tensor>& lengths, int64_t k, bool need_input, bool dense_bias, bool dense_weight) {
  check_lstm_operands(x_in, h0_in, c0_in, w_ih_in, w_hh_in);
  const int64_t B = x_in.size(0), T_ = x_in.size(1), I = x_in.size(2), H = w_hh_in.size(1), G = 4 * H;
  TORCH_CHECK(k >= 1, "meprop::lstm_backward: k must be >= 1");
  k = std::min(k, G);
  auto go = grad_output_in.contiguous();
  auto x = x_in.contiguous(), h0 = h0_in.contiguous(), c0 = c0_in.contiguous();
  auto w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  auto out = output_in.contiguous(), gates = gates_in.contiguous(), cells = cells_in.contiguous();
  auto opts = x.options();
  auto lopts = opts.dtype(at::kLong);
  auto len = read_lengths(lengths, B, T_);
  const int64_t R = B * T_;
  at::Tensor dh = grad_hn_in.contiguous().clone();
  at::Tensor dc = grad_cn_in.contiguous().clone();
  at::Tensor grad_x = need_input ? at::empty({B, T_, I}, opts) : at::empty({0}, opts);
  at::Tensor grad_bias = at::zeros({G}, opts);
  at::Tensor row_index = at::empty({0}, lopts);
  at::Tensor rows_ih, rows_hh;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "meprop_lstm_backward", [&] {
    using T = scalar_t;
    std::vector<int64_t> idx(std::max<int64_t>(R * k, 1));
    std::vector<T> val(std::max<int64_t>(R * k, 1));
    std::vector<int64_t> cnt(R, 0);
    const T* gop = go.data_ptr<T>();
    const T* gp = gates.data_ptr<T>();
    const T* cp = cells.data_ptr<T>();
    const T* c0p = c0.data_ptr<T>();
    const T* whh = w_hh.data_ptr<T>();
    T* dhp = dh.data_ptr<T>();
    T* dcp = dc.data_ptr<T>();
    at::Tensor dense_sum = dense_bias ? at::zeros({B, G}, opts) : at::Tensor();
    T* dsp = dense_bias ? dense_sum.data_ptr<T>() : nullptr;
    for (int64_t t = T_ - 1; t >= 0; --t) {
      auto step = [&](int64_t b0, int64_t b1) {
        SelectScratch<T> s(G, k);
        std::vector<T> dG(G), dhb(H);
        for (int64_t b = b0; b < b1; ++b) {
          if (t >= len[b]) continue;  // state carried through: dh, dc pass unchanged
          const int64_t r = b * T_ + t;
          for (int64_t j = 0; j < H; ++j) dhb[j] = dhp[b * H + j] + gop[r * H + j];
          const T* c_prev = t > 0 ? cp + (r - 1) * H : c0p + b * H;
          lstm_cell_grad(gp + r * G, cp + r * H, c_prev, dhb.data(), dcp + b * H, dG.data(), H);
          if (dsp)
            for (int64_t j = 0; j < G; ++j) dsp[b * G + j] += dG[j];
          select_row(dG.data(), G, k, idx.data() + r * k, val.data() + r * k, s);
          cnt[r] = k;
          // dh_{t-1} = sum of the kept gate gradients times their rows of W_hh
          for (int64_t c0 = 0; c0 < H; c0 += kTile<T>)
            gather_rows(idx.data() + r * k, val.data() + r * k, nullptr, k, 0, 1, whh, H, dhp + b * H, 0, c0,
                        std::min(kTile<T>, H - c0));
        }
      };
      if (B < 4) step(0, B);
      else at::parallel_for(0, B, 2, step);
    }
    if (dense_bias) grad_bias = dense_sum.sum(0);
    // Everything else is a per-example backward over the B*T (sequence, step) rows with
    // the selection made above.
    Transposed<T> tr = transpose_selection(idx.data(), val.data(), cnt.data(), R, k, G);
    const int64_t U = (int64_t)tr.touched.size();
    if (!dense_bias) {
      T* gb = grad_bias.data_ptr<T>();
      for (int64_t u = 0; u < U; ++u) {
        T sum = 0;
        for (int64_t e = tr.offsets[u]; e < tr.offsets[u + 1]; ++e) sum += tr.value[e];
        gb[tr.touched[u]] = sum;
      }
    }
    if (need_input && R > 0) {
      T* gx = grad_x.data_ptr<T>();
      const T* wih = w_ih.data_ptr<T>();
      for_tiles(I, R, R * k * I, kTile<T>, [&](int64_t r0, int64_t r1, int64_t c0, int64_t l) {
        gather_rows(idx.data(), val.data(), cnt.data(), k, r0, r1, wih, I, gx, I, c0, l);
      });
    }
    row_index = at::empty({U}, lopts);
    std::copy(tr.touched.begin(), tr.touched.end(), row_index.data_ptr<int64_t>());
    rows_ih = dense_weight ? at::zeros({G, I}, opts) : at::empty({U, I}, opts);
    rows_hh = dense_weight ? at::zeros({G, H}, opts) : at::empty({U, H}, opts);
    if (U > 0) {
      // h_{t-1} of every row: h0 at t = 0, else the previous output (valid steps form a prefix).
      at::Tensor hprev = at::empty({B, T_, H}, opts);
      hprev.select(1, 0).copy_(h0);
      if (T_ > 1) hprev.narrow(1, 1, T_ - 1).copy_(out.narrow(1, 0, T_ - 1));
      const T* hp = hprev.data_ptr<T>();
      const T* xp = x.data_ptr<T>();
      const int64_t* dest = dense_weight ? tr.touched.data() : nullptr;
      T* oih = rows_ih.data_ptr<T>();
      T* ohh = rows_hh.data_ptr<T>();
      const int64_t E = (int64_t)tr.example.size();
      for_tiles(I, U, E * I, kTile<T>, [&](int64_t u0, int64_t u1, int64_t c0, int64_t l) {
        scatter_rows(tr.offsets.data(), tr.example.data(), tr.value.data(), dest, u0, u1, xp, I, oih, I, c0, l);
      });
      for_tiles(H, U, E * H, kTile<T>, [&](int64_t u0, int64_t u1, int64_t c0, int64_t l) {
        scatter_rows(tr.offsets.data(), tr.example.data(), tr.value.data(), dest, u0, u1, hp, H, ohh, H, c0, l);
      });
    }
  });
  if (dense_weight) row_index = at::empty({0}, lopts);
  return {grad_x, dh, dc, row_index, rows_ih, rows_hh, grad_bias};
}

}  // namespace
}  // namespace detail
}  // namespace meprop

TORCH_LIBRARY_FRAGMENT(meprop, m) {
  m.def(
      "lstm_forward(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor bias_ih, "
      "Tensor bias_hh, Tensor? lengths) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "lstm_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor x, Tensor h0, Tensor c0, "
      "Tensor weight_ih, Tensor weight_hh, Tensor output, Tensor gates, Tensor cells, Tensor? lengths, int k, "
      "bool need_input, bool dense_bias, bool dense_weight) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(meprop, CPU, m) {
  m.impl("lstm_forward", &meprop::detail::lstm_forward);
  m.impl("lstm_backward", &meprop::detail::lstm_backward);
}
