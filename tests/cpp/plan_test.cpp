// mpd_plan on the CPU backend: bit-identical repeats, independence from thread count and from
// how many candidates are planned, the selection rule, concurrent workspaces, and bad input
// answered with status codes that leave the workspace usable.
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "check.h"
#include "model_writer.h"
#include "mpdiffuser/mpdiffuser.h"

namespace {

struct Result {
  std::vector<float> actions, values, costs, windows;
  uint32_t index = 0;
  mpd_status status = MPD_OK;
  bool operator==(const Result& o) const {
    return status == o.status && index == o.index && actions == o.actions && values == o.values &&
           costs == o.costs && windows == o.windows;
  }
};

mpd_model* load(const testing::TinyModel& m) {
  const std::vector<uint8_t> bytes = testing::write_model(m);
  mpd_model* model = nullptr;
  char message[256];
  if (mpd_model_load_memory(bytes.data(), bytes.size(), &model, message, sizeof message) != MPD_OK) {
    std::printf("load failed: %s\n", message);
  }
  return model;
}

Result plan(const mpd_model* model, mpd_workspace* ws, const float* state, uint64_t seed, const mpd_options& o) {
  mpd_model_info info;
  mpd_model_get_info(model, &info);
  Result r;
  r.actions.assign(o.actions_per_plan * info.action_dim, -99.0f);
  r.values.assign(o.num_candidates, 0.0f);
  r.costs.assign(o.num_candidates, 0.0f);
  r.windows.assign(static_cast<size_t>(o.num_candidates) * info.horizon * (info.state_dim + info.action_dim), 0.0f);
  mpd_plan_output out{r.actions.data(), 0, r.values.data(), r.costs.data(), r.windows.data()};
  r.status = mpd_plan(model, ws, state, seed, &o, &out, nullptr);
  r.index = out.index;
  return r;
}

mpd_workspace* workspace(const mpd_model* model, uint32_t n, uint32_t threads) {
  mpd_workspace* ws = nullptr;
  CHECK(mpd_workspace_create(model, MPD_BACKEND_CPU, n, threads, &ws) == MPD_OK);
  return ws;
}

}  // namespace

int main() {
  testing::TinyModel spec;
  spec.has_cost = true;
  mpd_model* model = load(spec);
  CHECK(model != nullptr);
  if (!model) return check::exit_code();
  const float state[3] = {0.3f, -1.1f, 1.7f};
  mpd_options o;
  mpd_model_default_options(model, &o);
  o.num_candidates = 64;

  // Repeats are bit-identical; thread counts do not change a bit.
  mpd_workspace* ws = workspace(model, 64, 2);
  const Result first = plan(model, ws, state, 42, o);
  CHECK(first.status == MPD_OK);
  CHECK(plan(model, ws, state, 42, o) == first);
  for (uint32_t threads : {1u, 3u, 5u, 64u}) {
    mpd_workspace* other = workspace(model, 64, threads);
    CHECK(plan(model, other, state, 42, o) == first);
    mpd_workspace_free(other);
  }
  // A different seed gives a different plan.
  CHECK(!(plan(model, ws, state, 43, o).windows == first.windows));
  // Candidate n's window does not depend on how many candidates are planned.
  mpd_options seven = o;
  seven.num_candidates = 7;
  const Result few = plan(model, ws, state, 42, seven);
  const size_t window = few.windows.size() / 7;
  CHECK(std::memcmp(few.windows.data(), first.windows.data(), few.windows.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(few.values.data(), first.values.data(), 7 * sizeof(float)) == 0);
  (void)window;

  // Outputs are finite, actions within the normalizer's range (windows are clipped to [-1, 1]
  // before the last noise-free step, so actions stay near it).
  for (float v : first.values) CHECK(std::isfinite(v));
  for (float a : first.actions) CHECK(std::isfinite(a) && std::fabs(a) < 1.5f);

  // Selection with a budget: the feasible candidate of largest value, else the least cost.
  for (double budget : {-1.0, 0.0, 1e9}) {
    mpd_options b = o;
    b.has_cost_budget = budget >= 0.0;
    b.cost_budget = budget >= 0.0 ? budget : 0.0;
    if (budget == 0.0) {  // a budget between the smallest and largest predicted cost
      float lo = first.costs[0], hi = first.costs[0];
      for (float c : first.costs) lo = std::fmin(lo, c), hi = std::fmax(hi, c);
      b.cost_budget = (static_cast<double>(lo) + hi) / 2.0;
    }
    const Result r = plan(model, ws, state, 42, b);
    CHECK(r.status == MPD_OK);
    int want = 0;
    bool any = false;
    for (int n = 0; n < 64; ++n) {
      const bool feasible = !b.has_cost_budget || r.costs[n] <= static_cast<float>(b.cost_budget);
      if (feasible && (!any || r.values[n] > r.values[want])) want = n, any = true;
    }
    if (!any) {
      for (int n = 1; n < 64; ++n) if (r.costs[n] < r.costs[want]) want = n;
    }
    CHECK(static_cast<int>(r.index) == want);
  }
  {
    mpd_options none = o;  // nothing feasible: the least cost
    none.has_cost_budget = 1;
    none.cost_budget = 0.0;
    float lo = first.costs[0];
    for (float c : first.costs) lo = std::fmin(lo, c);
    if (lo > 0.0f) {
      const Result r = plan(model, ws, state, 42, none);
      CHECK(r.costs[r.index] == lo);
    }
  }

  // Two workspaces of one model plan concurrently with the same answers.
  {
    mpd_workspace* a = workspace(model, 64, 1);
    mpd_workspace* b = workspace(model, 64, 1);
    Result ra, rb;
    std::thread ta([&] { for (int i = 0; i < 5; ++i) ra = plan(model, a, state, 42, o); });
    std::thread tb([&] { for (int i = 0; i < 5; ++i) rb = plan(model, b, state, 42, o); });
    ta.join();
    tb.join();
    CHECK(ra == first && rb == first);
    mpd_workspace_free(a);
    mpd_workspace_free(b);
  }

  // Bad input: a status, and the workspace still gives the same plan afterwards.
  float actions[2];
  mpd_plan_output out{actions, 0, nullptr, nullptr, nullptr};
  CHECK(mpd_plan(nullptr, ws, state, 1, &o, &out, nullptr) == MPD_ERR_NULL_POINTER);
  CHECK(mpd_plan(model, nullptr, state, 1, &o, &out, nullptr) == MPD_ERR_NULL_POINTER);
  CHECK(mpd_plan(model, ws, nullptr, 1, &o, &out, nullptr) == MPD_ERR_NULL_POINTER);
  CHECK(mpd_plan(model, ws, state, 1, &o, nullptr, nullptr) == MPD_ERR_NULL_POINTER);
  mpd_plan_output no_actions{nullptr, 0, nullptr, nullptr, nullptr};
  CHECK(mpd_plan(model, ws, state, 1, &o, &no_actions, nullptr) == MPD_ERR_NULL_POINTER);
  const float nan_state[3] = {0.0f, NAN, 1.0f};
  CHECK(mpd_plan(model, ws, nan_state, 1, &o, &out, nullptr) == MPD_ERR_NON_FINITE);
  const float inf_state[3] = {INFINITY, 0.0f, 1.0f};
  CHECK(mpd_plan(model, ws, inf_state, 1, &o, &out, nullptr) == MPD_ERR_NON_FINITE);
  auto rejects = [&](void (*mutate)(mpd_options*)) {
    mpd_options bad = o;
    mutate(&bad);
    char message[256] = {0};
    CHECK(mpd_plan(model, ws, state, 1, &bad, &out, nullptr) == MPD_ERR_INVALID_ARGUMENT);
    CHECK(mpd_options_check(model, &bad, message, sizeof message) != MPD_OK || bad.num_candidates > 64);
  };
  rejects([](mpd_options* b) { b->num_candidates = 0; });
  rejects([](mpd_options* b) { b->num_candidates = 65; });  // over the workspace's size
  rejects([](mpd_options* b) { b->dynamics_weight = 1.5; });
  rejects([](mpd_options* b) { b->dynamics_weight = NAN; });
  rejects([](mpd_options* b) { b->guidance = -1.0; });
  rejects([](mpd_options* b) { b->dynamics_every = 0; });
  rejects([](mpd_options* b) { b->discount = 0.0; });
  rejects([](mpd_options* b) { b->actions_per_plan = 5; });  // H = 4
  rejects([](mpd_options* b) { b->has_cost_limit = 0; });   // a cost model needs its limit
  rejects([](mpd_options* b) { b->cost_budget = -1.0, b->has_cost_budget = 1; });
  rejects([](mpd_options* b) { b->temperature = 0.0; });
  rejects([](mpd_options* b) { b->dynamics_guidance = -0.5; });
  rejects([](mpd_options* b) { b->temperature = 1.5; });
  rejects([](mpd_options* b) { b->temperature = NAN; });
  rejects([](mpd_options* b) { b->warm_start_level = 5; });  // K = 5
  char message[256];
  mpd_options missing = o;
  missing.has_cost_limit = 0;
  mpd_options_check(model, &missing, message, sizeof message);
  CHECK(std::strstr(message, "cost_limit") != nullptr);

  // Warm start: the chosen window comes out; k_w = 0 ignores a previous window; a non-finite one
  // is rejected; a warm plan is bit-identical across thread counts and differs from a cold one.
  {
    const size_t HD = 4 * 5;
    std::vector<float> chosen(HD, -7.0f), all(64 * HD);
    float act[2];
    mpd_plan_output wout{act, 0, nullptr, nullptr, all.data(), nullptr, chosen.data()};
    CHECK(mpd_plan(model, ws, state, 42, &o, &wout, nullptr) == MPD_OK);
    CHECK(std::memcmp(chosen.data(), all.data() + wout.index * HD, HD * sizeof(float)) == 0);
    CHECK(mpd_plan_warm(model, ws, state, chosen.data(), 42, &o, &out, nullptr) == MPD_OK);  // k_w = 0: cold
    CHECK(plan(model, ws, state, 42, o) == first);
    mpd_options warm = o;
    warm.warm_start_level = 3;
    warm.temperature = 0.25;
    std::vector<float> w1(HD), w2(HD), cold(HD);
    mpd_plan_output o1{act, 0, nullptr, nullptr, nullptr, nullptr, w1.data()};
    mpd_plan_output o2{act, 0, nullptr, nullptr, nullptr, nullptr, w2.data()};
    mpd_workspace* one = workspace(model, 64, 1);
    CHECK(mpd_plan_warm(model, ws, state, chosen.data(), 7, &warm, &o1, nullptr) == MPD_OK);
    CHECK(mpd_plan_warm(model, one, state, chosen.data(), 7, &warm, &o2, nullptr) == MPD_OK);
    CHECK(w1 == w2 && o1.index == o2.index);
    mpd_plan_output oc{act, 0, nullptr, nullptr, nullptr, nullptr, cold.data()};
    CHECK(mpd_plan_warm(model, ws, state, nullptr, 7, &warm, &oc, nullptr) == MPD_OK);  // no window: cold
    CHECK(cold != w1);
    std::vector<float> bad_window = chosen;
    bad_window[5] = NAN;
    CHECK(mpd_plan_warm(model, ws, state, bad_window.data(), 7, &warm, &o1, nullptr) == MPD_ERR_NON_FINITE);
    mpd_workspace_free(one);
  }

  // A workspace of another model, and backends that are not there.
  testing::TinyModel other_spec;
  mpd_model* other = load(other_spec);
  CHECK(mpd_plan(other, ws, state, 1, &o, &out, nullptr) == MPD_ERR_MODEL_MISMATCH);
  mpd_workspace* bad_ws = reinterpret_cast<mpd_workspace*>(0x1);
  CHECK(mpd_workspace_create(model, MPD_BACKEND_CPU, 0, 1, &bad_ws) == MPD_ERR_INVALID_ARGUMENT && bad_ws == nullptr);
  CHECK(mpd_workspace_create(model, static_cast<mpd_backend>(7), 8, 1, &bad_ws) == MPD_ERR_INVALID_ARGUMENT);
  CHECK(mpd_workspace_create(nullptr, MPD_BACKEND_CPU, 8, 1, &bad_ws) == MPD_ERR_NULL_POINTER);
  CHECK(plan(model, ws, state, 42, o) == first);

  // A model without a cost model rejects a cost limit, and plans with its defaults (options NULL).
  {
    mpd_workspace* ows = workspace(other, 8, 2);
    mpd_options oo;
    mpd_model_default_options(other, &oo);
    float act[2];
    mpd_plan_output oout{act, 0, nullptr, nullptr, nullptr};
    CHECK(mpd_plan(other, ows, state, 3, nullptr, &oout, nullptr) == MPD_OK);
    oo.has_cost_limit = 1;
    CHECK(mpd_plan(other, ows, state, 3, &oo, &oout, nullptr) == MPD_ERR_INVALID_ARGUMENT);
    mpd_workspace_free(ows);
  }
  // A cancel asked for before a plan stops that plan (MPD_ERR_CANCELLED) and is then spent: the
  // next plan is the same as ever. Workspace sizes are known before anything is allocated.
  {
    CHECK(mpd_workspace_cancel(ws) == MPD_OK);
    CHECK(plan(model, ws, state, 42, o).status == MPD_ERR_CANCELLED);
    CHECK(plan(model, ws, state, 42, o) == first);
    CHECK(mpd_workspace_cancel(nullptr) == MPD_ERR_NULL_POINTER);
    size_t small = 0, large = 0;
    CHECK(mpd_workspace_bytes(model, MPD_BACKEND_CPU, 64, 2, &small) == MPD_OK && small > 0);
    CHECK(mpd_workspace_bytes(model, MPD_BACKEND_CPU, 6400, 2, &large) == MPD_OK && large > 50 * small);
    CHECK(mpd_workspace_bytes(model, MPD_BACKEND_CPU, 0, 2, &large) == MPD_ERR_INVALID_ARGUMENT);
    CHECK(mpd_workspace_bytes(model, MPD_BACKEND_CUDA, 64, 2, &large) == MPD_ERR_NOT_AVAILABLE);
  }
  // A state far outside the training data (design: 100 half-ranges of it) is refused; just inside
  // it plans. The tiny model's states span [-2, 2]: half-range 2, middle 0.
  {
    const float far[3] = {0.3f, 201.0f, 1.7f}, near[3] = {0.3f, 199.0f, 1.7f};
    CHECK(plan(model, ws, far, 42, o).status == MPD_ERR_STATE_OUT_OF_RANGE);
    CHECK(plan(model, ws, near, 42, o).status == MPD_OK);
  }
  // Weights beyond the file's limit (what random bytes in a file's data often are) are refused at
  // load; finite weights within it can still overflow a deep network: the values come out infinite
  // or NaN, and the plan is refused with its own status, outputs still written.
  {
    testing::TinyModel beyond;
    beyond.scaled_net = "reward";
    beyond.scale = 1e30f;
    CHECK(load(beyond) == nullptr);
  }
  {
    testing::TinyModel huge;
    huge.scaled_net = "reward";
    huge.scale = 1e6f;  // within the file's weight limit (kWeightLimit): loads; nine layers still overflow
    huge.ranker_layers = 8;
    mpd_model* bad = load(huge);
    CHECK(bad != nullptr);
    mpd_workspace* bws = workspace(bad, 4, 1);
    mpd_options bo;
    mpd_model_default_options(bad, &bo);
    bo.num_candidates = 4;
    const Result r = plan(bad, bws, state, 1, bo);
    CHECK(r.status == MPD_ERR_NON_FINITE_PLAN);
    CHECK(!std::isfinite(r.values[0]) || !std::isfinite(r.values[1]) || !std::isfinite(r.values[2]) ||
          !std::isfinite(r.values[3]));
    CHECK(std::strstr(mpd_status_string(MPD_ERR_NON_FINITE_PLAN), "NaN or infinite") != nullptr);
    mpd_workspace_free(bws);
    mpd_model_free(bad);
  }
  mpd_workspace_free(ws);
  mpd_model_free(other);
  mpd_model_free(model);
  mpd_workspace_free(nullptr);
  mpd_model_free(nullptr);
  return check::exit_code();
}
