// The CUDA backend's U-Net code (csrc/cuda/unet.cuh) run on the CPU as a block of one thread,
// against the CPU backend's CpuUnet on the same model file, rows, levels and conditions: the
// kernel's arithmetic (convolutions, the down and transposed up convolutions, GroupNorm with
// FiLM, the skips, the time and condition embeddings, the scratch layout) checked on every
// machine, GPU or not. What only a GPU can check (the warp reductions of 32 lanes, the plan
// kernel around it, the device's sinf/expf) is tests/cpp/cuda_plan_test.cpp's.
//
// Tolerance: the two sum the same float32 products in different orders (CpuUnet's packed,
// vectorized columns; here taps then channels in index order), so outputs differ by float
// rounding amplified through the network's layers; 1e-4 on outputs of order 1 is three orders
// above what that rounding gives here (the measured difference is printed) and far below any
// indexing or layout error, which moves outputs by their own size.
//
// The fast numeric mode (every layer's inputs rounded to bfloat16) is compared the same way. There
// the two orders of the float32 sums can put an activation on either side of a bfloat16 rounding
// boundary (a relative step of 2^-8 for that one input), whose effect is at most of the size of the
// mode's own rounding (tests/python/sampling/test_fast_numerics.py measures it); most outputs
// agree to float rounding. The checks: every output within twice the largest difference between
// the fast and exact outputs, at most 5% of them above the exact mode's 1e-4, and the fast outputs
// measurably different from the exact ones (the mode is on).
#include <cmath>
#include <cstdio>
#include <vector>

// A block of one thread: every loop of unet.cuh's device functions covers all of its outputs.
#define __device__
struct ThreadIndex {
  unsigned x;
};
static const ThreadIndex threadIdx{0}, blockDim{1};
inline void __syncthreads() {}
template <class T>
T __shfl_down_sync(unsigned, T value, int) {  // one lane: never called (width 1)
  return value;
}
template <class T>
T __shfl_sync(unsigned, T value, int) {
  return value;
}

#include "check.h"
#include "cpu/unet.h"
#include "cuda/unet.cuh"
#include "model_writer.h"

namespace {

void compare(const testing::TinyModel& spec) {
  const std::vector<uint8_t> bytes = testing::write_model(spec);
  mpd::ModelFile file;
  std::string error;
  CHECK(mpd::read_model_file(bytes.data(), bytes.size(), &file, &error) == MPD_OK);
  if (!error.empty()) std::printf("%s\n", error.c_str());
  const mpd::ModelConfig& c = file.config;
  // The tensors in one host "arena", as the CUDA backend lays them out in device memory.
  std::vector<float> arena;
  std::vector<std::pair<std::string, size_t>> at;
  mpd::cuda::append_unet_tensors(file, &arena, &at);
  const int H = c.horizon, D = c.window_dim();
  mpd::cuda::UnetShape shape{H, D, D, c.unet_dim, c.unet_embed_dim, static_cast<int>(c.unet_mults.size()), {}};
  for (size_t i = 0; i < c.unet_mults.size(); ++i) shape.mults[i] = c.unet_mults[i];
  const mpd::cuda::UnetScratch layout = mpd::cuda::unet_scratch(shape, mpd::cuda::kUnetRows);
  uint32_t seed = 99;
  std::vector<float> windows(2 * static_cast<size_t>(H) * D), x0(c.state_dim), cond(c.cond_dim), zeros(c.cond_dim);
  for (float& v : windows) v = testing::next_uniform(&seed);
  for (float& v : x0) v = testing::next_uniform(&seed);
  for (float& v : cond) v = testing::next_uniform(&seed);
  float worst = 0.0f, worst_fast = 0.0f, fast_moved = 0.0f;
  size_t fast_outputs = 0, fast_above = 0;
  for (const char* net : {"planner", "dynamics"}) {
    const bool planner = std::string(net) == "planner";
    mpd::cuda::DevUnet dev;
    CHECK(mpd::cuda::device_unet(c, net, at, arena.data(), layout, &dev));
    const mpd::cpu::CpuUnet cpu(c, planner ? file.planner_unet : file.dynamics_unet, net);
    const int out_channels = cpu.out_channels();
    CHECK(out_channels == dev.out_channels);
    std::vector<float> cpu_scratch(cpu.scratch_floats()), gpu_scratch(static_cast<size_t>(layout.total), NAN);
    for (int count : {1, 2}) {         // candidates: one candidate's two rows, or two candidates' conditional rows
      for (int t : {0, c.num_steps - 1}) {
        const int rows = 2;
        const float* row_windows[2] = {windows.data(), windows.data() + (count == 2 ? static_cast<size_t>(H) * D : 0)};
        const float* row_conds[2] = {cond.data(), count == 2 ? cond.data() : zeros.data()};
        const size_t ldo = static_cast<size_t>(H) * out_channels + 3;
        std::vector<float> want(rows * ldo, 0.0f), got(rows * ldo, 0.0f), want_fast(rows * ldo, 0.0f),
            got_fast(rows * ldo, 0.0f);
        cpu.forward(rows, row_windows, t, x0.data(), row_conds, want.data(), ldo, cpu_scratch.data());
        mpd::cuda::unet_forward(dev, rows, windows.data(), H * D, count, t, x0.data(), cond.data(), got.data(),
                                static_cast<int>(ldo), gpu_scratch.data(), false);
        cpu.forward(rows, row_windows, t, x0.data(), row_conds, want_fast.data(), ldo, cpu_scratch.data(), true);
        mpd::cuda::unet_forward(dev, rows, windows.data(), H * D, count, t, x0.data(), cond.data(), got_fast.data(),
                                static_cast<int>(ldo), gpu_scratch.data(), true);
        for (int r = 0; r < rows; ++r) {
          for (int e = 0; e < H * out_channels; ++e) {
            const float a = got[r * ldo + e], b = want[r * ldo + e];
            CHECK(std::isfinite(a));
            worst = std::fmax(worst, std::fabs(a - b) / std::fmax(1.0f, std::fabs(b)));
            const float fa = got_fast[r * ldo + e], fb = want_fast[r * ldo + e];
            CHECK(std::isfinite(fa));
            const float d = std::fabs(fa - fb) / std::fmax(1.0f, std::fabs(fb));
            worst_fast = std::fmax(worst_fast, d);
            fast_above += d > 1e-4f;
            ++fast_outputs;
            fast_moved = std::fmax(fast_moved, std::fabs(fb - b) / std::fmax(1.0f, std::fabs(b)));
          }
        }
      }
    }
  }
  std::printf("unet H=%d dim=%d levels=%zu cost=%d: largest difference %.3g; fast mode %.3g (%zu of %zu above "
              "1e-4), fast vs exact %.3g\n", H, c.unet_dim, c.unet_mults.size(), spec.has_cost, worst, worst_fast,
              fast_above, fast_outputs, fast_moved);
  CHECK(worst <= 1e-4f);
  CHECK(worst_fast <= 2.0f * fast_moved);
  CHECK(fast_above * 20 <= fast_outputs);
  CHECK(fast_moved > 1e-4f);
}

}  // namespace

int main() {
  testing::TinyModel tiny;
  tiny.architecture = "unet";
  compare(tiny);
  tiny.has_cost = true;
  compare(tiny);
  testing::TinyModel deep = tiny;  // three levels, channels that need the skip convolutions
  deep.horizon = 16;
  deep.unet_dim = 16;
  deep.unet_embed_dim = 8;
  deep.unet_mults = {1, 2, 4};
  deep.has_cost = false;
  compare(deep);
  return check::exit_code();
}
