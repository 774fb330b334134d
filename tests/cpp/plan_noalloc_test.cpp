// mpd_plan never allocates: malloc, calloc, realloc, aligned_alloc and operator new are
// interposed in this executable and counted while plans run (glibc; skipped elsewhere).
#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "check.h"
#include "model_writer.h"
#include "mpdiffuser/mpdiffuser.h"

#if defined(__GLIBC__)
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
}

static std::atomic<bool> g_counting{false};
static std::atomic<long> g_allocations{0};

static void count() {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
}

extern "C" void* malloc(size_t n) {
  count();
  return __libc_malloc(n);
}
extern "C" void* calloc(size_t a, size_t b) {
  count();
  return __libc_calloc(a, b);
}
extern "C" void* realloc(void* p, size_t n) {
  count();
  return __libc_realloc(p, n);
}
extern "C" void* aligned_alloc(size_t alignment, size_t n) {
  count();
  return __libc_memalign(alignment, n);
}
void* operator new(size_t n) {
  count();
  void* p = __libc_malloc(n == 0 ? 1 : n);
  if (!p) throw std::bad_alloc();
  return p;
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

int main() {
  for (int variant = 0; variant < 3; ++variant) {  // mlp, mlp with a cost model, unet
    const bool has_cost = variant == 1;
    testing::TinyModel spec;
    spec.has_cost = has_cost;
    if (variant == 2) spec.architecture = "unet";
    const std::vector<uint8_t> bytes = testing::write_model(spec);
    mpd_model* model = nullptr;
    CHECK(mpd_model_load_memory(bytes.data(), bytes.size(), &model, nullptr, 0) == MPD_OK);
    mpd_workspace* ws = nullptr;
    CHECK(mpd_workspace_create(model, MPD_BACKEND_CPU, 32, 2, &ws) == MPD_OK);
    mpd_options o;
    mpd_model_default_options(model, &o);
    o.num_candidates = 32;
    std::vector<float> actions(2), values(32), costs(32), windows(32 * 4 * 5);
    mpd_plan_output out{actions.data(), 0, values.data(), costs.data(), windows.data()};
    const float state[3] = {0.1f, 0.2f, -0.3f};
    CHECK(mpd_plan(model, ws, state, 1, &o, &out, nullptr) == MPD_OK);  // warm-up
    g_allocations = 0;
    g_counting = true;
    mpd_status status = MPD_OK;
    for (int i = 0; i < 20 && status == MPD_OK; ++i) {
      o.num_candidates = 1 + static_cast<uint32_t>(i) % 32;
      o.guidance = i % 2 ? 1.0 : 1.5;
      status = mpd_plan(model, ws, state, static_cast<uint64_t>(i), &o, &out, nullptr);
    }
    g_counting = false;
    CHECK(status == MPD_OK);
    std::printf("%s, has_cost=%d: %ld allocations during 20 plans\n", spec.architecture.c_str(), has_cost,
                g_allocations.load());
    CHECK(g_allocations.load() == 0);
    // The counter works: creating a workspace allocates.
    g_counting = true;
    mpd_workspace* extra = nullptr;
    CHECK(mpd_workspace_create(model, MPD_BACKEND_CPU, 4, 1, &extra) == MPD_OK);
    g_counting = false;
    CHECK(g_allocations.load() > 0);
    mpd_workspace_free(extra);
    mpd_workspace_free(ws);
    mpd_model_free(model);
  }
  return check::exit_code();
}
#else
int main() {
  std::printf("allocation interposer needs glibc: skipped\n");
  return 77;
}
#endif
