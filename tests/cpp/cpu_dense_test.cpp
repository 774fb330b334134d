// The CPU backend's building blocks: vector exp/SiLU against libm, and the packed dense layer
// against a plain double-precision loop for every row count (so every register-block tail), with
// bit-identical rows whatever the number of rows in the call.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "check.h"
#include "cpu/dense.h"
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
  return check::exit_code();
}
