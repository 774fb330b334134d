// The CPU backend's denoiser families; see denoiser.h.
#include "cpu/denoiser.h"

#include <algorithm>
#include <cstring>

#include "cpu/dense.h"
#include "cpu/unet.h"
#include "math/update.h"

namespace mpd::cpu {

namespace {

size_t round16(int n) { return static_cast<size_t>((n + 15) / 16 * 16); }

// The mlp family: the input row [flatten(window), x_0, c or 0, emb(k)] (the planner), or with
// the window split into [flatten(X), flatten(U)] (the dynamics model), through a packed MLP.
class MlpDenoiser final : public Denoiser {
 public:
  MlpDenoiser(const ModelFile& file, bool planner)
      : config_(file.config),
        mlp_(pack_mlp(planner ? file.planner : file.dynamics)),
        split_(!planner),
        ld_input_(round16(mlp_.shape.in)),
        ld_hidden_(static_cast<size_t>(mlp_.width_padded())) {
    const int K = config_.num_steps;
    embeddings_.resize(static_cast<size_t>(K) * kEmbedDim);
    for (int k = 1; k <= K; ++k) math::step_embedding(k, embeddings_.data() + static_cast<size_t>(k - 1) * kEmbedDim);
  }

  size_t min_ldo() const override { return static_cast<size_t>(mlp_.out_padded()); }
  size_t scratch_floats(int max_rows) const override {
    return static_cast<size_t>(max_rows) * (ld_input_ + 2 * ld_hidden_);
  }

  void run(const DenoiseCall& q, float* scratch) const override {
    const int H = config_.horizon, dx = config_.state_dim, du = config_.action_dim, D = config_.window_dim();
    const size_t HD = static_cast<size_t>(H) * D;
    float* input = scratch;
    float* h0 = input + static_cast<size_t>(q.rows) * ld_input_;
    float* h1 = h0 + static_cast<size_t>(q.rows) * ld_hidden_;
    for (int r = 0; r < q.rows; ++r) {
      const float* src = q.windows + static_cast<size_t>(r % q.count) * HD;
      float* row = input + static_cast<size_t>(r) * ld_input_;
      if (split_) {
        for (int t = 0; t < H; ++t) {
          std::memcpy(row + t * dx, src + t * D, sizeof(float) * static_cast<size_t>(dx));
          std::memcpy(row + H * dx + t * du, src + t * D + dx, sizeof(float) * static_cast<size_t>(du));
        }
      } else {
        std::memcpy(row, src, sizeof(float) * HD);
      }
      float* tail = row + HD;
      std::memcpy(tail, q.x0, sizeof(float) * static_cast<size_t>(dx));
      std::memcpy(tail + dx, r < q.count ? q.cond : q.zeros, sizeof(float) * static_cast<size_t>(config_.cond_dim));
      std::memcpy(tail + dx + config_.cond_dim, embeddings_.data() + static_cast<size_t>(q.k - 1) * kEmbedDim,
                  sizeof(float) * kEmbedDim);
    }
    mlp_forward(mlp_, input, ld_input_, q.rows, h0, h1, q.out, q.ldo, q.fast);
  }

 private:
  ModelConfig config_;
  PackedMlp mlp_;
  bool split_;
  size_t ld_input_, ld_hidden_;
  std::vector<float> embeddings_;  // [K, 32], row k - 1 = emb(k)
};

// The unet family: the windows' rows [x_{t+1}, u_t] are its dx + du input channels, read in
// place; CpuUnet::kMaxRows rows per forward. prepare() computes the FiLM of every level's
// conditional (and unconditional) context once per plan: row u K + k - 1 of `prepared` (u = 1:
// unconditional), so a call only reads them.
class UnetDenoiser final : public Denoiser {
 public:
  UnetDenoiser(const ModelFile& file, bool planner)
      : config_(file.config),
        unet_(file.config, planner ? file.planner_unet : file.dynamics_unet, planner ? "planner" : "dynamics") {}

  size_t min_ldo() const override {
    return static_cast<size_t>(config_.horizon) * static_cast<size_t>(unet_.out_channels());
  }
  size_t scratch_floats(int) const override { return unet_.scratch_floats(); }
  size_t prepared_floats() const override { return 2 * static_cast<size_t>(config_.num_steps) * unet_.film_floats(); }

  void prepare(const DenoisePlan& plan, float* prepared, float* scratch) const override {
    int levels[CpuUnet::kMaxRows];
    const float* conds[CpuUnet::kMaxRows];
    for (int u = 0; u < (plan.unconditional ? 2 : 1); ++u) {
      for (int k0 = 1; k0 <= plan.levels; k0 += CpuUnet::kMaxRows) {
        const int count = std::min(CpuUnet::kMaxRows, plan.levels - k0 + 1);
        for (int i = 0; i < count; ++i) {
          levels[i] = k0 + i - 1;
          conds[i] = u == 0 ? plan.cond : plan.zeros;
        }
        unet_.films(count, levels, plan.x0, conds, prepared + row(u, k0) * unet_.film_floats(), scratch, plan.fast);
      }
    }
  }

  void run(const DenoiseCall& q, float* scratch) const override {
    const size_t HD = static_cast<size_t>(config_.horizon) * config_.window_dim();
    const float* windows[CpuUnet::kMaxRows];
    const float* films[CpuUnet::kMaxRows];
    for (int r0 = 0; r0 < q.rows; r0 += CpuUnet::kMaxRows) {
      const int batch = std::min(CpuUnet::kMaxRows, q.rows - r0);
      for (int b = 0; b < batch; ++b) {
        const int r = r0 + b;
        windows[b] = q.windows + static_cast<size_t>(r % q.count) * HD;
        films[b] = q.prepared + row(r < q.count ? 0 : 1, q.k) * unet_.film_floats();
      }
      unet_.forward(batch, windows, films, q.out + static_cast<size_t>(r0) * q.ldo, q.ldo, scratch, q.fast);
    }
  }

 private:
  size_t row(int unconditional, int k) const {
    return static_cast<size_t>(unconditional) * static_cast<size_t>(config_.num_steps) + static_cast<size_t>(k - 1);
  }

  ModelConfig config_;
  CpuUnet unet_;
};

}  // namespace

std::unique_ptr<Denoiser> make_denoiser(const ModelFile& file, bool planner) {
  if (file.config.architecture == MPD_ARCH_UNET) return std::make_unique<UnetDenoiser>(file, planner);
  return std::make_unique<MlpDenoiser>(file, planner);
}

}  // namespace mpd::cpu
