// The CPU backend of the alternating sampler (design section 3): candidates are split into
// contiguous chunks, one per thread; each thread runs all K steps of dynamics and planner updates
// and the ranker for its chunk (conditional and unconditional rows as one batch), so the only
// synchronization is one join per plan. Per-candidate arithmetic does not depend on the chunking:
// plans are bit-identical for any thread count and any candidate count split.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "format/model_file.h"
#include "cpu/dense.h"
#include "cpu/denoiser.h"
#include "cpu/thread_pool.h"
#include "math/update.h"

namespace mpd::cpu {

// What the CPU backend needs of a model: its networks, ready to run, and per-step constants.
struct CpuModel {
  ModelConfig config;
  std::unique_ptr<Denoiser> planner, dynamics;  // in the model file's family
  PackedMlp reward, cost;                       // cost: empty layers without a cost model
  std::vector<math::StepFloats> steps;          // [K], index k - 1

  explicit CpuModel(const ModelFile& file);
};

class CpuSampler {
 public:
  CpuSampler(const CpuModel& model, int max_candidates, int threads);  // throws std::bad_alloc

  // The bytes a sampler of these sizes allocates (its buffers; the thread stacks aside), computed
  // by the same layout as the constructor, so it can be checked before anything is allocated.
  static size_t workspace_bytes(const CpuModel& model, int max_candidates, int threads);

  int max_candidates() const { return max_candidates_; }
  int threads() const { return pool_.size(); }

  // Samples and ranks req.num_candidates windows from the normalized state x0 [dx]; results in
  // windows(), values(), costs(). Returns false when cancel() stopped it (results incomplete).
  bool plan(const PlanRequest& req, const float* x0);

  // Thread-safe: the running plan (or, when none runs, the next one) stops at its next denoising
  // step and plan() returns false. The flag is cleared when that plan returns.
  void cancel() { cancel_.store(true, std::memory_order_relaxed); }

  const float* windows() const { return windows_.get(); }  // [N, H, D] normalized
  const float* values() const { return values_.get(); }    // [N]
  const float* costs() const { return costs_.get(); }      // [N], with a cost model

 private:
  struct Scratch {
    AlignedBuffer input;    // [C H, D] ranker rows
    AlignedBuffer h0, h1;   // [C H, ld_hidden]
    AlignedBuffer eps;      // [max(2C, C H), ld_eps]: network outputs
    AlignedBuffer noise;    // [H D]
    AlignedBuffer denoise;  // the denoisers' scratch for 2C rows
    AlignedBuffer prepared[2];  // the planner's and the dynamics model's prepare() output
  };
  struct Layout {  // buffer sizes in floats, one home for the constructor and workspace_bytes
    int threads, chunk_capacity;
    size_t ld_hidden, ld_eps, input, hidden, eps, noise, denoise, prepared[2], windows, candidates, horizon, cond;
  };
  static Layout layout(const CpuModel& model, int max_candidates, int threads);
  static void run_chunk(void* self, int index);
  void sample_chunk(int first, int count, Scratch& s);
  void rank_chunk(int first, int count, Scratch& s);

  const CpuModel& model_;
  int max_candidates_;
  int chunk_capacity_;  // candidates per thread at most
  size_t ld_hidden_, ld_eps_;
  ThreadPool pool_;
  std::vector<Scratch> scratch_;
  AlignedBuffer windows_, values_, costs_, gammas_;  // gammas_: [H] discount^t
  AlignedBuffer zeros_;                              // [cond_dim]: the unconditional rows' condition
  const PlanRequest* request_ = nullptr;
  const float* x0_ = nullptr;
  int active_threads_ = 1;
  std::atomic<bool> cancel_{false};
};

}  // namespace mpd::cpu
