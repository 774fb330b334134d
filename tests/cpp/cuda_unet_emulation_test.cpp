// The CUDA backend's U-Net code (csrc/cuda/unet.cuh) run on the CPU, against the CPU backend's
// CpuUnet on the same model file, rows, levels and conditions: the kernel's arithmetic (the FiLM
// rows of unet_films, convolutions, the down and transposed up convolutions, GroupNorm with FiLM,
// the skips, the scratch layout) and its decomposition over a group of blocks (each member a host
// thread computing its slice of every layer's output channels, GroupSync's barrier between the
// layers, on the same code) checked on every machine, GPU or not. Every group size gives the same
// bits as a group of one block (each output sums its inputs in the same order), and every member
// ends with every output row. What only a GPU can check (the warp reductions of 32 lanes, the plan
// kernel around it, the device's sinf/expf, the barrier's memory ordering on the device) is
// tests/cpp/cuda_plan_test.cpp's.
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
#include <cstring>
#include <thread>
#include <vector>

// A block of one thread: every loop of unet.cuh's device functions covers all of its outputs.
#define __device__
#define __noinline__
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
#include "wmma_emulation.h"  // before the kernels: their tensor-core layers
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
  // bfloat16 copies of the convolutions (the fast mode's tensor cores) exactly when the file's
  // weights are bfloat16 values.
  const bool tensor_cores = mpd::cuda::append_unet_tensors(file, &arena, &at);
  CHECK(tensor_cores == spec.bf16_values);
  const int H = c.horizon, D = c.window_dim();
  mpd::cuda::UnetShape shape{H, D, D, c.unet_dim, c.unet_embed_dim, static_cast<int>(c.unet_mults.size()), {}};
  for (size_t i = 0; i < c.unet_mults.size(); ++i) shape.mults[i] = c.unet_mults[i];
  const mpd::cuda::UnetScratch layout = mpd::cuda::unet_scratch(shape, mpd::cuda::kUnetRows, tensor_cores);
  const mpd::cuda::UnetScratch plain = mpd::cuda::unet_scratch(shape, mpd::cuda::kUnetRows);  // no tensor cores
  uint32_t seed = 99;
  std::vector<float> windows(2 * static_cast<size_t>(H) * D), x0(c.state_dim), cond(c.cond_dim), zeros(c.cond_dim);
  for (float& v : windows) v = testing::next_uniform(&seed);
  for (float& v : x0) v = testing::next_uniform(&seed);
  for (float& v : cond) v = testing::next_uniform(&seed);
  float worst = 0.0f, worst_fast = 0.0f, fast_moved = 0.0f;
  float whole_worst = 0.0f, whole_moved = 0.0f;  // no split convolutions: from the CPU, from the split ones
  size_t fast_outputs = 0, fast_above = 0;
  int groups_checked = 0;
  float tensor_vs_plain = 0.0f;  // the fast mode with tensor-core layers against the same without
  for (const char* net : {"planner", "dynamics"}) {
    const bool planner = std::string(net) == "planner";
    mpd::cuda::DevUnet dev, dev_plain;
    CHECK(mpd::cuda::device_unet(c, net, at, arena.data(), layout, &dev));
    CHECK(mpd::cuda::device_unet(c, net, at, arena.data(), plain, &dev_plain));
    if (tensor_cores) {  // a layer that qualifies: 16 channels in and out, its bfloat16 copy there
      const mpd::cuda::DevConv& conv = dev.down1[0].second.conv;
      std::vector<uint16_t> half(16);
      const mpd::cuda::UnetOwnBuffers t{half.data(), 16, nullptr, nullptr};
      CHECK(conv.wh != nullptr && mpd::cuda::unet_tensor_layer(conv, conv.in, 1, true, t));
      CHECK(!mpd::cuda::unet_tensor_layer(conv, conv.in, 1, false, t));  // never in the exact mode
    }
    const mpd::cpu::CpuUnet cpu(c, planner ? file.planner_unet : file.dynamics_unet, net);
    const int out_channels = cpu.out_channels();
    CHECK(out_channels == dev.out_channels);
    std::vector<float> cpu_scratch(cpu.scratch_floats());
    const mpd::cuda::UnetFilmLayout film_layout =
        mpd::cuda::unet_film_layout(layout, c.unet_dim, c.state_dim, c.cond_dim);
    std::vector<float> film_smem(static_cast<size_t>(film_layout.total));
    for (int count : {1, 2}) {         // candidates: one candidate's two rows, or two candidates' conditional rows
      for (int t : {0, c.num_steps - 1}) {
        const int rows = 2;
        const float* row_windows[2] = {windows.data(), windows.data() + (count == 2 ? static_cast<size_t>(H) * D : 0)};
        const float* row_conds[2] = {cond.data(), count == 2 ? cond.data() : zeros.data()};
        const size_t ldo = static_cast<size_t>(H) * out_channels + 3;
        std::vector<float> exact_rows;  // the CPU's exact outputs, for the fast mode's distance from them
        for (const bool fast : {false, true}) {
          // The FiLM rows as the FiLM kernel computes them: conditional, unconditional.
          std::vector<float> films(2 * static_cast<size_t>(dev.film_floats), NAN);
          std::memcpy(film_smem.data() + film_layout.x0, x0.data(), sizeof(float) * x0.size());
          for (int kind = 0; kind < 2; ++kind) {
            mpd::cuda::unet_films(dev, t, film_smem.data() + film_layout.x0, kind == 0 ? cond.data() : nullptr,
                                  films.data() + kind * dev.film_floats, film_smem.data(), film_layout, fast);
          }
          std::vector<float> want(rows * ldo, 0.0f), first;
          cpu.forward(rows, row_windows, t, x0.data(), row_conds, want.data(), ldo, cpu_scratch.data(), fast);
          for (int members = 1; members <= mpd::cuda::kMaxBlocksPerCandidate; members *= 2) {
            std::vector<float> scratch(static_cast<size_t>(layout.total), NAN);
            std::vector<std::vector<float>> got(static_cast<size_t>(members), std::vector<float>(rows * ldo, 0.0f));
            // Each block's own tensor-core buffers: within the group's scratch (the global
            // placement) for groups of 1 and 4, else apart from it, as in shared memory.
            const bool own_apart = members != 1 && members != 4;
            std::vector<std::vector<float>> own(static_cast<size_t>(members),
                                                std::vector<float>(static_cast<size_t>(layout.own_floats) + 1, NAN));
            unsigned arrivals = 0;
            std::vector<std::thread> blocks;
            for (int rank = 0; rank < members; ++rank) {
              blocks.emplace_back([&, rank] {
                mpd::cuda::GroupSync g{members > 1 ? &arrivals : nullptr, members, rank, 0};
                const mpd::cuda::UnetCall call{windows.data(), H * D, count, rows,
                                               {films.data(), films.data() + dev.film_floats},
                                               got[static_cast<size_t>(rank)].data(), static_cast<int>(ldo)};
                float* buffers = own_apart ? own[static_cast<size_t>(rank)].data()
                                           : mpd::cuda::unet_own_buffers(scratch.data(), layout, rank);
                mpd::cuda::unet_forward(dev, call, scratch.data(), buffers, g, fast);
              });
            }
            for (std::thread& b : blocks) b.join();
            if (members == 1) first = got[0];
            if (members == 1 && fast && tensor_cores) {  // the same call with every layer on the plain loops
              std::vector<float> scratch_plain(static_cast<size_t>(plain.total), NAN), out_plain(rows * ldo, 0.0f);
              mpd::cuda::GroupSync one{nullptr, 1, 0, 0};
              const mpd::cuda::UnetCall call{windows.data(), H * D, count, rows,
                                             {films.data(), films.data() + dev.film_floats}, out_plain.data(),
                                             static_cast<int>(ldo)};
              mpd::cuda::unet_forward(dev_plain, call, scratch_plain.data(),
                                      mpd::cuda::unet_own_buffers(scratch_plain.data(), plain, 0), one, fast);
              for (size_t e = 0; e < out_plain.size(); ++e) {
                const float d = std::fabs(first[e] - out_plain[e]) / std::fmax(1.0f, std::fabs(out_plain[e]));
                tensor_vs_plain = std::fmax(tensor_vs_plain, d);
              }
            }
            for (const std::vector<float>& member : got) {  // the same bits for every member and group size
              CHECK(std::memcmp(member.data(), first.data(), sizeof(float) * first.size()) == 0);
            }
            if (members == 1 && !fast) {  // no convolution split into input-channel slices: as close to the CPU
              std::vector<float> scratch_whole(static_cast<size_t>(layout.total), NAN), out_whole(rows * ldo, 0.0f);
              mpd::cuda::GroupSync one{nullptr, 1, 0, 0};
              const mpd::cuda::UnetCall call{windows.data(), H * D, count, rows,
                                             {films.data(), films.data() + dev.film_floats}, out_whole.data(),
                                             static_cast<int>(ldo), 0};
              mpd::cuda::unet_forward(dev, call, scratch_whole.data(),
                                      mpd::cuda::unet_own_buffers(scratch_whole.data(), layout, 0), one, fast);
              for (int r = 0; r < rows; ++r) {
                for (int e = 0; e < H * out_channels; ++e) {
                  const float a = out_whole[r * ldo + e], b = want[r * ldo + e];
                  whole_worst = std::fmax(whole_worst, std::fabs(a - b) / std::fmax(1.0f, std::fabs(b)));
                  whole_moved = std::fmax(whole_moved, std::fabs(a - first[r * ldo + e]));
                }
              }
            }
            ++groups_checked;
          }
          for (int r = 0; r < rows; ++r) {
            for (int e = 0; e < H * out_channels; ++e) {
              const float a = first[r * ldo + e], b = want[r * ldo + e];
              CHECK(std::isfinite(a));
              const float d = std::fabs(a - b) / std::fmax(1.0f, std::fabs(b));
              if (!fast) {
                worst = std::fmax(worst, d);
                continue;
              }
              worst_fast = std::fmax(worst_fast, d);
              fast_above += d > 1e-4f;
              ++fast_outputs;
            }
          }
          if (!fast) {
            exact_rows = want;
            continue;
          }
          for (size_t i = 0; i < want.size(); ++i) {
            const float d = std::fabs(want[i] - exact_rows[i]) / std::fmax(1.0f, std::fabs(exact_rows[i]));
            fast_moved = std::fmax(fast_moved, d);
          }
        }
      }
    }
  }
  std::printf("unet H=%d dim=%d levels=%zu cost=%d: largest difference %.3g; fast mode %.3g (%zu of %zu above "
              "1e-4), fast vs exact %.3g; %d calls by groups of 1-%d blocks, identical bits%s\n", H, c.unet_dim,
              c.unet_mults.size(), spec.has_cost, worst, worst_fast, fast_above, fast_outputs, fast_moved,
              groups_checked, mpd::cuda::kMaxBlocksPerCandidate, tensor_cores ? "; bf16 weights" : "");
  if (tensor_cores) {
    std::printf("  tensor-core layers against the plain loops, fast mode: %.3g\n", tensor_vs_plain);
    CHECK(tensor_vs_plain <= 2.0f * fast_moved);
  }
  std::printf("  convolutions unsplit: %.3g from the CPU, %.3g from the split ones\n", whole_worst, whole_moved);
  CHECK(worst <= 1e-4f);
  CHECK(whole_worst <= 1e-4f);
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
  testing::TinyModel deep_bf16 = deep;  // bfloat16 weights: the fast mode's tensor-core layers
  deep_bf16.bf16_values = true;
  compare(deep_bf16);
  return check::exit_code();
}
