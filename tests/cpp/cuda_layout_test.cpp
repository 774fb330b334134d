// The CUDA plan kernel's layout math (csrc/cuda/layout.h) on the CPU, for models of several shapes
// and every kernel variant: aligned, disjoint buffers; strides that hold every layer's padded rows;
// a partial-sum buffer that holds every layer's slices; every input quad in exactly one slice. And
// the shared memory of the Hopper-sized H = 32 model equals what Nsight Compute read off the kernel
// on an H100 (83.22 KB with one candidate per block, 119.34 KB with four). Runs without a GPU.
#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

#include "check.h"
#include "cuda/layout.h"

namespace {

using mpd::cuda::DenseSplit;
using mpd::cuda::kRankRows;
using mpd::cuda::kThreads;
using mpd::cuda::Layout;
using mpd::cuda::Strides;

// A model as the exporter writes it (design section 3): residual MLPs with `layers` hidden layers.
struct Shape {
  const char* name;
  int dx, du, horizon, width, layers, ranker_width, ranker_layers, reward_outputs;
  bool cost;
};

std::vector<int> mlp_dims(int in, int width, int layers, int out) {
  std::vector<int> dims{in};
  for (int l = 0; l < layers; ++l) dims.push_back(width);
  dims.push_back(out);
  return dims;
}

struct Nets {
  std::vector<int> dims[4];
  int num = 3;
};

Nets nets_of(const Shape& s) {
  const int D = s.dx + s.du, cond = s.cost ? 2 : 1, in = s.horizon * D + s.dx + cond + 32;
  Nets n;
  n.dims[0] = mlp_dims(in, s.width, s.layers, s.horizon * D);       // planner
  n.dims[1] = mlp_dims(in, s.width, s.layers, s.horizon * s.dx);    // dynamics
  n.dims[2] = mlp_dims(D, s.ranker_width, s.ranker_layers, s.reward_outputs);
  n.dims[3] = mlp_dims(D, s.ranker_width, s.ranker_layers, 1);
  n.num = s.cost ? 4 : 3;
  return n;
}

Strides strides_of(const Shape& s, const Nets& n) {
  const int* dims[4] = {};
  int dense[4] = {};
  for (int i = 0; i < n.num; ++i) {
    dims[i] = n.dims[i].data();
    dense[i] = static_cast<int>(n.dims[i].size()) - 1;
  }
  return mpd::cuda::plan_strides(s.dx, s.du, s.horizon, dims, dense, n.num);
}

void check_shape(const Shape& s) {
  const Nets n = nets_of(s);
  const Strides st = strides_of(s, n);
  for (int ld : {st.ld_tau, st.ld_in, st.ld_h, st.ld_out, st.ld_rin, st.ld_rh, st.ld_rout, st.part_cols}) {
    CHECK(ld % 4 == 0 && ld > 0);
  }
  CHECK(st.ld_tau >= s.horizon * (s.dx + s.du));
  for (int cpb : {1, 2, 4}) {
    const Layout l = mpd::cuda::plan_layout(st, cpb);
    const int offsets[] = {l.x0, l.gamma, l.tau, l.in, l.h0, l.h1, l.eps, l.part, l.total};
    for (int i = 0; i + 1 < 9; ++i) CHECK(offsets[i] % 4 == 0 && offsets[i] <= offsets[i + 1]);
    CHECK(l.gamma - l.x0 >= s.dx && l.tau - l.gamma >= s.horizon && l.in - l.tau >= cpb * st.ld_tau);
    for (int i = 0; i < n.num; ++i) {
      const bool ranker = i >= 2;
      const int rows = ranker ? kRankRows : 2 * cpb;
      const int ld_in = ranker ? st.ld_rin : st.ld_in, ld_h = ranker ? st.ld_rh : st.ld_h;
      const int ld_out = ranker ? st.ld_rout : st.ld_out;
      CHECK(rows * ld_in <= l.h0 - l.in && rows * ld_h <= l.h1 - l.h0 && rows * ld_h <= l.eps - l.h1);
      CHECK(rows * ld_out <= l.part - l.eps);
      const std::vector<int>& dims = n.dims[i];
      const int dense = static_cast<int>(dims.size()) - 1;
      for (int layer = 0; layer < dense; ++layer) {
        const int in = dims[layer], out = dims[layer + 1];
        const int x_stride = layer == 0 ? ld_in : ld_h, y_stride = layer + 1 == dense ? ld_out : ld_h;
        const DenseSplit d = mpd::cuda::dense_split(in, out, kThreads);
        CHECK(4 * d.Q <= x_stride);  // the 16-byte input reads stay inside the row
        CHECK(out <= y_stride && d.ldw >= out);
        CHECK(d.S >= 1 && d.L >= 1 && d.S * d.L >= d.Q);  // every input quad in a slice
        CHECK(d.G * d.S <= (d.G > kThreads ? d.G : kThreads));               // one task per thread or fewer
        const int rows_alloc = ranker ? kRankRows : 2 * cpb;  // the template's R: the row stride in part
        CHECK(d.S * rows_alloc * d.ldw <= l.total - l.part);
        if (layer == 0 && i == 0 && cpb == 1) {
          std::printf("%s: planner layer 0 %d -> %d: %d slices of %d quads, %d tasks\n", s.name, in, out, d.S, d.L,
                      d.G * d.S);
        }
      }
    }
    if (cpb == 1) std::printf("%s: %d bytes of shared memory with 1 candidate per block\n", s.name, 4 * l.total);
  }
}

// The unet kernel's scratch (unet_scratch): every activation of the network (walked here again,
// layer by layer, as cpu/unet.cpp runs it) fits an activation buffer; the kept level outputs are
// disjoint and fit a row's kept region; regions are 16-byte aligned, disjoint and in order.
void check_unet(const char* name, int dx, int du, int horizon, int dim, int embed, std::vector<int> mults,
                size_t expected_bytes) {
  mpd::cuda::UnetShape shape{horizon, dx + du, dx + du, dim, embed, static_cast<int>(mults.size()), {}};
  for (size_t i = 0; i < mults.size(); ++i) shape.mults[i] = mults[i];
  const mpd::cuda::UnetScratch u = mpd::cuda::unet_scratch(shape, mpd::cuda::kUnetRows);
  std::vector<std::pair<int, int>> acts = {{horizon, dx + du}};  // (positions, channels) of every activation
  int length = horizon, channels = dx + du, widest = dx + du;
  std::vector<int> kept_floats;
  for (size_t i = 0; i < mults.size(); ++i) {
    const int d = dim * mults[i];
    acts.push_back({length, d});  // both blocks' outputs, the first conv's, the skip conv's
    kept_floats.push_back(length * d);
    if (i + 1 < mults.size()) acts.push_back({length / 2, d});
    channels = d;
    widest = std::max(widest, d);
    if (i + 1 < mults.size()) length /= 2;
  }
  for (size_t j = 0; j + 1 < mults.size(); ++j) {
    const int d = dim * mults[mults.size() - 2 - j], skip = dim * mults[mults.size() - 1 - j];
    acts.push_back({length, channels + skip});
    acts.push_back({length, d});
    acts.push_back({2 * length, d});
    widest = std::max(widest, channels + skip);
    length *= 2;
    channels = d;
  }
  acts.push_back({horizon, dim});
  acts.push_back({horizon, dx + du});
  CHECK(length == horizon);
  for (const auto& a : acts) CHECK(a.first * a.second <= u.act);
  CHECK(u.max_channels == widest);
  for (size_t i = 0; i < kept_floats.size(); ++i) {
    const int end = i + 1 < kept_floats.size() ? u.kept_at[i + 1] : u.kept_row;
    CHECK(u.kept_at[i] % 4 == 0 && u.kept_at[i] + kept_floats[i] <= end);
  }
  const int regions[] = {u.buf[0], u.buf[1], u.buf[2], u.buf[3], u.kept, u.head, u.stats, u.total};
  for (size_t i = 0; i + 1 < sizeof regions / sizeof regions[0]; ++i) {
    CHECK(regions[i] % 4 == 0 && regions[i] <= regions[i + 1]);
  }
  const int rows = mpd::cuda::kUnetRows;
  CHECK(u.buf[1] - u.buf[0] == rows * u.act && u.head - u.kept == rows * u.kept_row);
  CHECK(u.stats - u.head >= rows * horizon * (dx + du) && u.total - u.stats >= rows * 2 * mpd::cuda::kUnetGroups);
  // The FiLM kernel's shared memory: the state, a context row, two hidden rows (the second also
  // the sinusoid of the level and the condition).
  const int cond_dim = 3;
  const mpd::cuda::UnetFilmLayout f = mpd::cuda::unet_film_layout(u, dim, dx, cond_dim);
  CHECK(f.x0 == 0 && f.ctx >= dx && f.hid - f.ctx >= dim + 2 * embed && f.hid2 - f.hid >= std::max(4 * dim, 4 * embed));
  CHECK(f.total - f.hid2 >= std::max({4 * dim, 4 * embed, dim, cond_dim}));
  CHECK(f.ctx % 4 == 0 && f.hid % 4 == 0 && f.hid2 % 4 == 0);
  std::printf("unet %s: %d floats of scratch per candidate (%.1f KB)\n", name, u.total, u.total * 4 / 1024.0);
  CHECK(expected_bytes == 0 || static_cast<size_t>(u.total) * 4 == expected_bytes);
}

// The unet family's shared memory (plan_layout with dense_diffusion false): planner and dynamics
// outputs in the eps rows, the ranker's dense layers in the other buffers, which must hold them.
// Returns the bytes; `dense_bytes` gets what the layout would take were the two U-Nets sized as
// dense networks (their windows as layer widths), as the layout did before it knew the family.
int unet_shared_bytes(const char* name, int dx, int du, int horizon, int* dense_bytes, Layout* layout = nullptr) {
  const int D = dx + du, HD = horizon * D;
  const std::vector<int> planner{HD, HD}, dynamics{HD, horizon * dx};
  const std::vector<int> reward = mlp_dims(D, 128, 2, 2);
  const int* dims[4] = {planner.data(), dynamics.data(), reward.data(), nullptr};
  const int dense[4] = {1, 1, static_cast<int>(reward.size()) - 1, 0};
  const Strides st = mpd::cuda::plan_strides(dx, du, horizon, dims, dense, 3, false);
  const Layout l = mpd::cuda::plan_layout(st, 1);
  CHECK(2 * st.ld_out >= 2 * HD && l.part - l.eps >= 2 * HD);  // the U-Nets' two output rows
  for (int layer = 0; layer + 1 < static_cast<int>(reward.size()); ++layer) {
    const DenseSplit d = mpd::cuda::dense_split(reward[layer], reward[layer + 1], kThreads);
    CHECK(4 * d.Q <= (layer == 0 ? st.ld_rin : st.ld_rh) && d.S * kRankRows * d.ldw <= l.total - l.part);
  }
  *dense_bytes = 4 * mpd::cuda::plan_layout(mpd::cuda::plan_strides(dx, du, horizon, dims, dense, 3, true), 1).total;
  std::printf("unet %s: %d bytes of shared memory per block (%d sized as dense networks)\n", name, 4 * l.total,
              *dense_bytes);
  if (layout != nullptr) *layout = l;
  return 4 * l.total;
}

// Where the sampler keeps a unet candidate's scratch (layout.h: unet_placement) on an Orin (163 KiB
// of shared memory a block may take, sm_87, no clusters) and an H100/H200 (227 KiB, sm_90,
// clusters), for groups of one block and of several; tensor: the fast mode's tensor-core buffers (bfloat16 weights). Returns
// the placements [orin one, orin several, h100 one, h100 several].
std::vector<int> check_placement(const char* name, int dx, int du, int horizon, int dim, std::vector<int> mults,
                                 bool tensor) {
  mpd::cuda::UnetShape shape{horizon, dx + du, dx + du, dim, dim, static_cast<int>(mults.size()), {}};
  for (size_t i = 0; i < mults.size(); ++i) shape.mults[i] = mults[i];
  const mpd::cuda::UnetScratch u = mpd::cuda::unet_scratch(shape, mpd::cuda::kUnetRows, tensor);
  int dense_bytes = 0;
  Layout l{};
  unet_shared_bytes(name, dx, du, horizon, &dense_bytes, &l);
  std::vector<int> placements;
  for (long limit : {163L * 1024 / 4, 227L * 1024 / 4}) {
    const bool clusters = limit > 163L * 1024 / 4;
    for (int members : {1, 8}) {
      const int placement = mpd::cuda::unet_placement(l, u, members, limit, clusters);
      const int floats = mpd::cuda::shared_floats(l, u, placement);
      CHECK(floats <= limit && (placement != mpd::cuda::kUnetAllShared || members == 1));
      CHECK(placement != mpd::cuda::kUnetReplicated || (members > 1 && clusters));
      // The tail over the ranker's partial sums and past them: it leaves x0, tau and the eps rows
      // (the networks' outputs) alone, on a 32-byte boundary.
      const int tail = mpd::cuda::unet_shared_floats(u, placement), at = mpd::cuda::unet_tail_at(l);
      CHECK(floats == (tail > 0 ? std::max(l.total, at + tail) : l.total));
      CHECK(placement != mpd::cuda::kUnetGlobal || tail == 0);
      CHECK(at % 8 == 0 && at >= l.part && at < l.part + 8 && l.part >= l.eps + (l.part - l.eps));
      placements.push_back(placement);
    }
  }
  std::printf("unet %s%s: placements Orin %d/%d, H100 %d/%d (one block / eight; 2 all shared, 1 own, 0 global, "
              "3 replicas), %d + %d floats\n", name, tensor ? " (tensor cores)" : "", placements[0], placements[1], placements[2],
              placements[3], u.tensor_at, u.own_floats);
  return placements;
}

}  // namespace

int main() {
  // The unet family's shared memory: a Humanoid-size window (348 + 17 channels, H = 16) fits the
  // 163 KB a block may take on sm_87 (Orin) and the 227 KB of sm_90; as dense networks it fitted neither.
  int dense_bytes = 0;
  const int humanoid = unet_shared_bytes("humanoid H=16", 348, 17, 16, &dense_bytes);
  CHECK(humanoid <= 163 * 1024 && dense_bytes > 227 * 1024);
  unet_shared_bytes("hopper H=16", 11, 3, 16, &dense_bytes);

  // The unet family: the tests' tiny model, the default size on Hopper and the authors' size.
  // By hand for the tiny one: activations at most 2 x (16 + 16) = 64 floats (the joined input of the
  // up block), kept 4 x 8 + 2 x 16 = 64, context 24, hidden 32, FiLM 2 x 32 = 64, stats 2 x 8: for
  // two rows 4 x 128 + 128 + 48 + 64 + 64 + 128 + 32 = 976 floats.
  // Each of up to 8 blocks' own partial sums: the layers split (unet_slices) are the 16 -> 16
  // convolutions at 2 positions (64 outputs, 2 slices: 128 floats) and the up block's 24 -> 8 at 2
  // (32 outputs, 3 slices: 96); 128 each.
  check_unet("tiny", 3, 2, 4, 8, 8, {1, 2}, (712 + 8 * 128) * 4);  // 4 x 2 x 64 + 2 x 64 + 2 x 20 + 2 x 16
  CHECK(mpd::cuda::unet_slices(16, 64) == 2 && mpd::cuda::unet_slices(24, 32) == 3 && mpd::cuda::unet_slices(5, 64) == 1);
  CHECK(mpd::cuda::unet_slices(2048, 4095) == 2 && mpd::cuda::unet_slices(2048, 4096) == 1);
  check_unet("default hopper", 11, 3, 16, 32, 32, {1, 2, 4}, 0);
  check_unet("authors hopper", 11, 3, 32, 128, 128, {1, 4, 8}, 0);

  // The default size's whole scratch lives in shared memory on both GPUs for a group of one, in
  // either numeric mode; a group keeps replicas there on an H100 (clusters), its blocks'
  // tensor-core buffers on an Orin. The authors' size's activations (512 KB a candidate) stay global.
  using mpd::cuda::kUnetAllShared, mpd::cuda::kUnetOwnShared, mpd::cuda::kUnetReplicated;
  for (bool tensor : {false, true}) {
    const std::vector<int> hopper = check_placement("default hopper", 11, 3, 16, 32, {1, 2, 4}, tensor);
    CHECK((hopper == std::vector<int>{kUnetAllShared, kUnetOwnShared, kUnetAllShared, kUnetReplicated}));
    const std::vector<int> authors = check_placement("authors hopper", 11, 3, 32, 128, {1, 4, 8}, tensor);
    for (int placement : authors) CHECK(placement != kUnetAllShared && placement != kUnetReplicated);
  }
  check_placement("humanoid", 348, 17, 16, 32, {1, 2, 4}, true);

  const Shape shapes[] = {
      {"tiny", 3, 2, 4, 24, 2, 16, 2, 2, false},
      {"odd", 5, 3, 7, 72, 3, 40, 3, 2, true},
      {"hopper H=16", 11, 3, 16, 256, 3, 128, 2, 2, true},
      {"hopper H=32", 11, 3, 32, 256, 3, 128, 2, 2, false},
      {"ant", 27, 8, 16, 512, 3, 128, 2, 2, false},
      {"wide", 60, 20, 64, 2304, 4, 2304, 3, 2, true},  // layers wider than 4 x 512 columns
  };
  for (const Shape& s : shapes) check_shape(s);

  // What ran on the H100 (benchmarks/results/gpu): the synthetic Hopper H = 32 model, no cost model.
  const Shape h32{"hopper H=32", 11, 3, 32, 256, 3, 128, 2, 2, false};
  const Strides st = strides_of(h32, nets_of(h32));
  CHECK(4 * mpd::cuda::plan_layout(st, 1).total == 83216);   // ncu: 83.22 KB per block
  CHECK(4 * mpd::cuda::plan_layout(st, 4).total == 119344);  // ncu: 119.34 KB per block
  return check::exit_code();
}
