// The CPU backend's building blocks: vector exp/SiLU against libm, and the packed dense layer
// against a plain double-precision loop for every row count (so every register-block tail), with
// bit-identical rows whatever the number of rows in the call; the fast numeric mode's rounding of
// the inputs, and the AMX tiles against the vector kernel on the same rounded inputs.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "check.h"
#include "cpu/amx.h"
#include "cpu/dense.h"
#include "math/bf16.h"
#include "model_writer.h"

using namespace mpd::cpu;

int main() {
  // exp and SiLU per lane within 3 ulp-ish relative error of the libm values.
  double worst_exp = 0.0, worst_silu = 0.0;
  for (int i = -8700; i <= 8800; i += 7) {
    float lanes[kVec];
    for (int j = 0; j < kVec; ++j) lanes[j] = static_cast<float>(i) / 100.0f + 0.0013f * static_cast<float>(j);
    float e[kVec], s[kVec];
    store(e, vexp(load(lanes)));
    store(s, vsilu(load(lanes)));
    for (int j = 0; j < kVec; ++j) {
      const double x = lanes[j];
      const double want = std::exp(x), want_silu = x / (1.0 + std::exp(-x));
      worst_exp = std::fmax(worst_exp, std::fabs(e[j] - want) / want);
      if (std::fabs(want_silu) > 1e-30) worst_silu = std::fmax(worst_silu, std::fabs(s[j] - want_silu) / std::fabs(want_silu));
    }
  }
  std::printf("vexp max rel err %.3g, vsilu max rel err %.3g\n", worst_exp, worst_silu);
  CHECK(worst_exp < 4e-7);
  CHECK(worst_silu < 1e-6);

  // A dense layer with awkward sizes: in = 37, out = 45 (not multiples of the panel width).
  uint32_t rng = 7;
  mpd::MlpWeights w;
  w.shape = {37, 45, 1, 19};
  for (int l = 0; l < 2; ++l) {
    mpd::DenseWeights d;
    d.in = l == 0 ? 37 : 45;
    d.out = l == 0 ? 45 : 19;
    d.weight.resize(static_cast<size_t>(d.in) * d.out);
    d.bias.resize(static_cast<size_t>(d.out));
    for (float& v : d.weight) v = testing::next_uniform(&rng) * 0.3f;
    for (float& v : d.bias) v = testing::next_uniform(&rng) * 0.1f;
    w.layers.push_back(d);
  }
  const PackedMlp mlp = pack_mlp(w);
  const int max_rows = 29;
  const size_t ldx = 40, ldh = static_cast<size_t>(mlp.width_padded()), ldo = static_cast<size_t>(mlp.out_padded());
  std::vector<float> x(max_rows * ldx);
  for (float& v : x) v = testing::next_uniform(&rng);
  std::vector<float> h0(max_rows * ldh), h1(max_rows * ldh), full(max_rows * ldo), part(max_rows * ldo);
  mlp_forward(mlp, x.data(), ldx, max_rows, h0.data(), h1.data(), full.data(), ldo);
  double worst = 0.0;
  for (int r = 0; r < max_rows; ++r) {
    std::vector<double> h(45);
    for (int o = 0; o < 45; ++o) {
      double acc = w.layers[0].bias[o];
      for (int i = 0; i < 37; ++i) acc += static_cast<double>(x[r * ldx + i]) * w.layers[0].weight[o * 37 + i];
      h[o] = acc / (1.0 + std::exp(-acc));
    }
    for (int o = 0; o < 19; ++o) {
      double acc = w.layers[1].bias[o];
      for (int i = 0; i < 45; ++i) acc += h[i] * w.layers[1].weight[o * 45 + i];
      worst = std::fmax(worst, std::fabs(acc - full[r * ldo + o]));
    }
  }
  std::printf("dense vs double loop: max abs err %.3g\n", worst);
  CHECK(worst < 1e-5);
  // Any row count gives the same bits for the same row (row blocks and tails agree).
  for (int rows = 1; rows <= max_rows; ++rows) {
    mlp_forward(mlp, x.data(), ldx, rows, h0.data(), h1.data(), part.data(), ldo);
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < 19; ++o) CHECK(part[r * ldo + o] == full[r * ldo + o]);
    }
  }

  // Weights that are bfloat16 values (rounded to nearest even) pack in bfloat16 pairs, half the
  // bytes (odd input counts: the last word's high half unused), and give the same bits as float32
  // panels of the same weights, for every row count.
  mpd::MlpWeights wb = w;
  for (mpd::DenseWeights& d : wb.layers) {
    for (float& v : d.weight) {
      uint32_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
      std::memcpy(&v, &bits, sizeof bits);
    }
  }
  const PackedMlp half = pack_mlp(wb);
  PackedMlp single;
  single.shape = wb.shape;
  for (const mpd::DenseWeights& d : wb.layers) {
    single.layers.push_back(pack_dense(d.weight.data(), d.bias.data(), d.in, d.out, /*allow_bf16=*/false));
  }
  for (size_t l = 0; l < half.layers.size(); ++l) {
    CHECK(half.layers[l].bf16);
    CHECK(!single.layers[l].bf16);
    CHECK(half.layers[l].weight_bytes() == static_cast<size_t>(half.layers[l].out_padded) * ((half.layers[l].in + 1) / 2) * 4);
  }
  CHECK(!mlp.layers[0].bf16);  // float32 weights stay float32
  std::vector<float> want(max_rows * ldo), got(max_rows * ldo);
  for (int rows = 1; rows <= max_rows; ++rows) {
    mlp_forward(single, x.data(), ldx, rows, h0.data(), h1.data(), want.data(), ldo);
    mlp_forward(half, x.data(), ldx, rows, h0.data(), h1.data(), got.data(), ldo);
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < 19; ++o) CHECK(got[r * ldo + o] == want[r * ldo + o]);
    }
  }

  // The fast numeric mode: dense_forward with round_inputs gives the bits of the exact mode on
  // inputs rounded to bfloat16 first, for float32 and bfloat16 panels and every row count.
  std::vector<float> xr(x);
  for (float& v : xr) v = mpd::math::bf16_round(v);
  CHECK(mpd::math::bf16_round(1.0f + 1.0f / 256.0f) == 1.0f);                // a tie: to even
  CHECK(mpd::math::bf16_round(1.0f + 3.0f / 256.0f) == 1.0f + 4.0f / 256.0f);  // a tie: to even (up)
  CHECK(mpd::math::bf16_round(1.0f + 1.5f / 256.0f) == 1.0f + 2.0f / 256.0f);  // above the tie: up
  CHECK(std::isnan(mpd::math::bf16_round(std::nanf(""))));
  for (const PackedMlp* m : {static_cast<const PackedMlp*>(&single), &half}) {
    const PackedDense& d = m->layers[0];
    const size_t ldy = static_cast<size_t>(d.out_padded);
    std::vector<float> a(max_rows * ldy), b(max_rows * ldy);
    for (int rows = 1; rows <= max_rows; ++rows) {
      dense_forward(d, x.data(), ldx, rows, Epilogue::kSilu, nullptr, 0, a.data(), ldy, /*round_inputs=*/true);
      dense_forward(d, xr.data(), ldx, rows, Epilogue::kSilu, nullptr, 0, b.data(), ldy);
      for (size_t e = 0; e < static_cast<size_t>(rows) * ldy; ++e) CHECK(a[e] == b[e]);
    }
  }

  // to_bf16 (vectorized) gives math::bf16_round's bits for ties, NaN, infinities and random floats.
  {
    std::vector<float> v = {1.0f + 1.0f / 256.0f, 1.0f + 3.0f / 256.0f, -2.5e-39f, 3.4e38f, std::nanf(""),
                            -std::nanf(""), INFINITY, -INFINITY, 0.0f, -0.0f};
    for (int i = 0; i < 1000; ++i) v.push_back(testing::next_uniform(&rng) * 1e4f);
    std::vector<uint16_t> h(v.size());
    to_bf16(v.data(), v.size(), h.data());
    for (size_t e = 0; e < v.size(); ++e) {
      uint32_t bits;
      std::memcpy(&bits, &v[e], sizeof bits);
      CHECK(h[e] == static_cast<uint16_t>(mpd::math::bf16_round_bits(bits) >> 16));
    }
  }

  // AMX tiles (where this CPU has them): a convolution-shaped bfloat16 layer, in = 3 x 64 inputs
  // (three taps of 64 channels), rows overlapping by two taps (lda = 64), 1..16 rows, out = 45.
  // The tile sums the same exact products in float32 in another order, so each output is within
  // 2 n u sum |a_i w_i| of the vector kernel's (n = in + 1 terms, u = 2^-24; each order's error is
  // at most n u sum |terms|).
  if (!amx_available()) {
    std::printf("AMX: not available on this CPU or OS, tile test skipped\n");
    return check::exit_code();
  }
  const int in = 192, out = 45, channels = 64, positions = 16;
  std::vector<float> wc(static_cast<size_t>(in) * out), bc(out);
  for (float& v : wc) v = mpd::math::bf16_round(testing::next_uniform(&rng) * 0.2f);
  for (float& v : bc) v = testing::next_uniform(&rng) * 0.1f;
  const PackedDense conv = pack_dense(wc.data(), bc.data(), in, out);
  CHECK(conv.bf16 && amx_fits(conv));
  const size_t span = static_cast<size_t>(positions + 2) * channels;  // every row's window inside it
  std::vector<float> act(span);
  for (float& v : act) v = testing::next_uniform(&rng) * 2.0f;
  std::vector<uint16_t> act16(span);
  to_bf16(act.data(), span, act16.data());
  const size_t ldy = static_cast<size_t>(conv.out_padded);
  std::vector<float> tile(positions * ldy, -1.0f), vec(positions * ldy), tile2(2 * positions * ldy, -1.0f);
  double worst_tile = 0.0;
  for (int rows = 1; rows <= positions; ++rows) {
    const uint16_t* a = act16.data();
    float* y = tile.data();
    amx_dense(conv, 1, &a, channels, rows, &y, ldy);
    // Two batches sharing the weight tiles: the second (rows one position later) gives the bits
    // of a single-batch call on its rows, the first those of `tile`.
    const uint16_t* a2[2] = {act16.data(), act16.data() + channels};
    float* y2[2] = {tile2.data(), tile2.data() + positions * ldy};
    amx_dense(conv, 2, a2, channels, rows, y2, ldy);
    for (size_t e = 0; e < static_cast<size_t>(rows) * ldy; ++e) CHECK(tile2[e] == tile[e]);
    for (int r = 0; r + 1 < rows; ++r) {
      for (size_t o = 0; o < ldy; ++o) CHECK(y2[1][r * ldy + o] == tile[(r + 1) * ldy + o]);
    }
    dense_forward(conv, act.data(), channels, rows, Epilogue::kLinear, nullptr, 0, vec.data(), ldy, true);
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < conv.out_padded; ++o) {
        double bound = std::fabs(bc[o < out ? o : 0]);
        if (o < out) {
          for (int i = 0; i < in; ++i) {
            bound += std::fabs(mpd::math::bf16_round(act[static_cast<size_t>(r) * channels + i]) *
                               static_cast<double>(wc[static_cast<size_t>(o) * in + i]));
          }
        }
        bound *= 2.0 * (in + 1) * std::ldexp(1.0, -24);
        const double diff = std::fabs(static_cast<double>(tile[r * ldy + o]) - vec[r * ldy + o]);
        worst_tile = std::fmax(worst_tile, diff / (bound + 1e-30));
        CHECK(diff <= bound);
        if (o >= out) CHECK(tile[r * ldy + o] == 0.0f);  // padding columns: zero
      }
    }
  }
  std::printf("AMX tiles vs the vector kernel: worst error / bound %.3g\n", worst_tile);
  return check::exit_code();
}
