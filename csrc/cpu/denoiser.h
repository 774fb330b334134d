// The CPU backend's denoisers (design section 2, "Network families"): the planner and the
// dynamics model behind one interface, one implementation per family (mlp: packed residual MLP
// over the flattened window; unet: CpuUnet). The sampler sees only this interface.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "format/model_file.h"

namespace mpd::cpu {

// One network call over a chunk's candidates.
struct DenoiseCall {
  const float* windows;  // [count, H, D] the candidates' windows tau^k
  int count;             // candidates
  int rows;              // count, or 2 count: rows count..2 count - 1 are unconditional
  int k;                 // denoising level, 1..K
  const float* x0;       // [dx]
  const float* cond;     // [cond_dim] the conditional rows' condition
  const float* zeros;    // [cond_dim] the unconditional rows' condition (zeros)
  float* out;            // [rows, ldo]: row r = the output for window r % count, [H, out channels]
  size_t ldo;            // >= min_ldo()
  bool fast;             // the fast numeric mode (PlanRequest::fast_numerics)
  const float* prepared; // what prepare() computed for this plan (prepared_floats() floats)
};

// What every network call of one plan shares (design section 3: x_0 and the condition are fixed
// for the plan, the level runs K .. 1).
struct DenoisePlan {
  const float* x0;      // [dx]
  const float* cond;    // [cond_dim] the conditional rows' condition
  const float* zeros;   // [cond_dim] the unconditional rows' condition (zeros)
  int levels;           // the plan calls levels k = levels .. 1
  bool unconditional;   // it calls unconditional rows too (guidance != 1)
  bool fast;
};

class Denoiser {
 public:
  virtual ~Denoiser() = default;
  virtual size_t min_ldo() const = 0;                       // output row stride it needs
  virtual size_t scratch_floats(int max_rows) const = 0;   // run's scratch for up to max_rows rows
  // out = the network on every row; scratch: scratch_floats(rows) floats, not shared with a
  // concurrent call. A row's output does not depend on the other rows.
  virtual void run(const DenoiseCall& call, float* scratch) const = 0;
  // The part of every network call that depends on the plan only (the unet's FiLM), computed once
  // per plan into `prepared` before the calls; scratch as run's. Nothing by default.
  virtual size_t prepared_floats() const { return 0; }
  virtual void prepare(const DenoisePlan&, float* /*prepared*/, float* /*scratch*/) const {}
};

// The planner (planner = true: D channels out) or the dynamics model (dx out) of a model file,
// in its family's implementation.
std::unique_ptr<Denoiser> make_denoiser(const ModelFile& file, bool planner);

}  // namespace mpd::cpu
