/* mpdiffuser: the public C API of the MPDiffuser sampling core.
 *
 * Plain C, no CUDA and no Python headers, so firmware can include it from C or C++.
 * Every function returns an mpd_status and never aborts or throws across this boundary.
 */
#ifndef MPDIFFUSER_MPDIFFUSER_H_
#define MPDIFFUSER_MPDIFFUSER_H_

#include <stddef.h>
#include <stdint.h>

#include "mpdiffuser/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Result of every API call. MPD_OK is zero; every other value is an error. */
typedef enum mpd_status {
  MPD_OK = 0,
  MPD_ERR_NULL_POINTER = 1,     /* a required pointer argument was NULL */
  MPD_ERR_INVALID_ARGUMENT = 2, /* a count, size or option is out of its range */
  MPD_ERR_NOT_AVAILABLE = 3,    /* the backend was not compiled in, or no device is present */
  MPD_ERR_DEVICE = 4,           /* the accelerator runtime reported an error */
  MPD_ERR_IO = 5,               /* a file could not be opened or read */
  MPD_ERR_BAD_MODEL_FILE = 6,   /* a model file is truncated, corrupt or of another version */
  MPD_ERR_NON_FINITE = 7,       /* an input holds NaN or infinity */
  MPD_ERR_MODEL_MISMATCH = 8,   /* a workspace used with a model it was not created for */
  MPD_ERR_OUT_OF_MEMORY = 9,    /* an allocation at load or workspace creation failed */
  MPD_ERR_NON_FINITE_PLAN = 10, /* the plan came out NaN or infinite (corrupt weights, a diverging
                                   sampler): its actions must not be executed */
  MPD_ERR_CANCELLED = 11,       /* mpd_workspace_cancel stopped the plan; its outputs are not written */
  MPD_ERR_STATE_OUT_OF_RANGE = 12 /* the state lies more than 100 half-ranges of the training data
                                     from its middle in some dimension (a sensor or unit fault) */
} mpd_status;

/* A short, static, human-readable description of a status; never NULL. */
const char* mpd_status_string(mpd_status status);

/* The library's version as "MAJOR.MINOR.PATCH"; static, never NULL. */
const char* mpd_version_string(void);

/* Fills out[0..count) with z(seed, candidate, step): the Philox4x32-10 standard normals of
 * design section 3.1 that every backend uses. count may be 0 (out may then be NULL). */
mpd_status mpd_noise_normal(uint64_t seed, uint32_t candidate, uint32_t step, float* out,
                            size_t count);

/* ---- The sampler (design sections 2 and 3) ------------------------------------------------
 * A model is immutable once loaded and may be shared by any number of workspaces and threads.
 * A workspace is sized once for (candidates, horizon) and owned by one thread at a time;
 * mpd_plan never allocates. Different workspaces may plan concurrently. */

typedef struct mpd_model mpd_model;
typedef struct mpd_workspace mpd_workspace;

typedef enum mpd_backend {
  MPD_BACKEND_CPU = 0, /* threads over candidates, vectorized inner loops */
  MPD_BACKEND_CUDA = 1 /* the fused GPU sampler (when compiled in and a device is present) */
} mpd_backend;

/* Per-plan options; every backend honours all of them. Their names, defaults, ranges and meaning
 * are in mpdiffuser/options.def, one line each (N = num_candidates >= 1 and at most the
 * workspace's max_candidates; an optional option x comes with has_x, 0 or 1). Fill them with
 * mpd_model_default_options (the model file's stored defaults) and change what you need. */
typedef struct mpd_options {
#define MPD_OPTION_COUNT(name, ...) uint32_t name;
#define MPD_OPTION_REAL(name, ...) double name;
#define MPD_OPTION_OPTIONAL_REAL(name, ...) \
  double name;                              \
  uint32_t has_##name;
#include "mpdiffuser/options.def"
} mpd_options;

/* What the planner and dynamics networks output (the model file's `prediction`). */
typedef enum mpd_prediction {
  MPD_PREDICT_EPSILON = 0, /* the noise */
  MPD_PREDICT_SAMPLE = 1   /* the clean window */
} mpd_prediction;

/* The network family of the planner and the dynamics model (metadata 'architecture'). */
typedef enum mpd_architecture {
  MPD_ARCH_MLP = 0, /* residual MLPs over the flattened window: every backend */
  MPD_ARCH_UNET = 1 /* the authors' temporal U-Net with FiLM: every backend (CUDA: one candidate per
                       thread block, its layers unfused; up to 8 levels) */
} mpd_architecture;

/* What a loaded model is; env_id is NUL-terminated (truncated to 63 bytes). width and layers
 * describe the mlp family (0 for unet). */
typedef struct mpd_model_info {
  uint32_t state_dim, action_dim, cond_dim, horizon, num_steps;
  uint32_t width, layers, ranker_width, ranker_layers, reward_outputs, has_cost;
  char env_id[64];
  uint32_t format_version; /* of the file it was loaded from */
  mpd_prediction prediction;
  mpd_architecture architecture;
  uint32_t digest_verified; /* 1: the file's content digest (digest.sha256) matched; 0: the file
                               has none (written before digests), so its integrity is unknown */
} mpd_model_info;

/* Where mpd_plan writes. actions is required; the others may be NULL. With the CUDA backend
 * every pointer (state included) is device memory and the plan runs asynchronously on the
 * stream, so `index` is not written: pass index_ptr to receive it on the device. A CUDA plan of
 * a non-finite state writes index MPD_INDEX_NON_FINITE_INPUT and NaN actions, one far outside
 * the data (MPD_ERR_STATE_OUT_OF_RANGE) MPD_INDEX_STATE_OUT_OF_RANGE, and one whose chosen
 * window, actions or any value came out non-finite MPD_INDEX_NON_FINITE_PLAN, with NaN actions,
 * instead of returning a status (mpd_plan_host returns the statuses). */
#define MPD_INDEX_NON_FINITE_INPUT 0xffffffffu
#define MPD_INDEX_NON_FINITE_PLAN 0xfffffffeu
#define MPD_INDEX_STATE_OUT_OF_RANGE 0xfffffffdu
typedef struct mpd_plan_output {
  float* actions;     /* [actions_per_plan, action_dim] the chosen candidate's actions, env units */
  uint32_t index;     /* out (CPU backend): the chosen candidate */
  float* values;      /* [N] or NULL: every candidate's value V_n */
  float* costs;       /* [N] or NULL: every candidate's cost C_n (written only with a cost model) */
  float* windows;     /* [N, H, state_dim + action_dim] or NULL: the finished normalized windows */
  uint32_t* index_ptr; /* [1] or NULL: also receives the chosen candidate (device memory for CUDA) */
  float* window;      /* [H, state_dim + action_dim] or NULL: the chosen normalized window, the
                         next plan's warm start */
} mpd_plan_output;

/* Loads and validates a model file. On failure *model is NULL and, when message is not NULL,
 * message[0..message_size) receives the reason (NUL-terminated). A file whose content digest does
 * not match its metadata and tensors is refused (MPD_ERR_BAD_MODEL_FILE); one without a digest
 * loads with mpd_model_info.digest_verified = 0. */
mpd_status mpd_model_load(const char* path, mpd_model** model, char* message, size_t message_size);

/* The same from a buffer holding the file's bytes (for firmware with the model in flash). */
mpd_status mpd_model_load_memory(const void* data, size_t size, mpd_model** model, char* message,
                                 size_t message_size);

/* Frees a model; NULL is allowed. Free its workspaces first. */
void mpd_model_free(mpd_model* model);

mpd_status mpd_model_get_info(const mpd_model* model, mpd_model_info* info);

/* The sampler defaults stored in the model file. */
mpd_status mpd_model_default_options(const mpd_model* model, mpd_options* options);

/* Checks options against a model; on failure message receives the reason. */
mpd_status mpd_options_check(const mpd_model* model, const mpd_options* options, char* message,
                             size_t message_size);

/* A workspace for plans of up to max_candidates candidates with `backend`. num_threads = 0 uses
 * every hardware thread (CPU backend; the CUDA backend ignores it). */
mpd_status mpd_workspace_create(const mpd_model* model, mpd_backend backend,
                                uint32_t max_candidates, uint32_t num_threads,
                                mpd_workspace** workspace);

/* Frees a workspace; NULL is allowed. */
void mpd_workspace_free(mpd_workspace* workspace);

/* The bytes mpd_workspace_create would allocate for these arguments (CPU backend; the CUDA
 * backend returns MPD_ERR_NOT_AVAILABLE), computed without allocating: check it against the
 * memory the robot has before asking for many candidates. */
mpd_status mpd_workspace_bytes(const mpd_model* model, mpd_backend backend, uint32_t max_candidates,
                               uint32_t num_threads, size_t* bytes);

/* Thread-safe, from any thread: the plan running on this CPU workspace (or, if none runs, its
 * next one) stops at its next denoising step and returns MPD_ERR_CANCELLED. For long plans of
 * many candidates that a user or a watchdog must be able to stop. CUDA workspaces:
 * MPD_ERR_NOT_AVAILABLE (a launched plan cannot be stopped). */
mpd_status mpd_workspace_cancel(mpd_workspace* workspace);

/* One MPDiffuser plan from the raw (env-unit) state [state_dim] with the seed's noise.
 * options NULL = the model's defaults. stream: a cudaStream_t for the CUDA backend (NULL = the
 * default stream), ignored by the CPU backend. Never allocates; the workspace stays usable after
 * any error. MPD_ERR_NON_FINITE_PLAN: every value V_n, the chosen window and its actions are
 * checked; on failure the outputs are still written (for diagnosis), the actions must not be
 * executed. */
mpd_status mpd_plan(const mpd_model* model, mpd_workspace* workspace, const float* state,
                    uint64_t seed, const mpd_options* options, mpd_plan_output* output,
                    void* stream);

/* mpd_plan warm-started (design section 3, warm start): with options->warm_start_level = k_w > 0
 * and previous_window [H, state_dim + action_dim] (the last plan's output->window; device memory
 * for CUDA) the plan starts from that window shifted by actions_per_plan rows and re-noised to
 * level k_w, and runs steps k_w..1 only. previous_window NULL or k_w = 0 plans cold, as mpd_plan.
 * A non-finite previous window returns MPD_ERR_NON_FINITE (CPU; CUDA writes NaN actions). */
mpd_status mpd_plan_warm(const mpd_model* model, mpd_workspace* workspace, const float* state,
                         const float* previous_window, uint64_t seed, const mpd_options* options,
                         mpd_plan_output* output, void* stream);

/* mpd_plan_warm with state, previous window and outputs in host memory for every backend. */
mpd_status mpd_plan_warm_host(const mpd_model* model, mpd_workspace* workspace, const float* state,
                              const float* previous_window, uint64_t seed,
                              const mpd_options* options, mpd_plan_output* output, void* stream);

/* mpd_plan with state and outputs in host memory for every backend: the CUDA backend copies
 * them through the workspace's own device buffers and synchronizes the stream before returning
 * (a non-finite state returns MPD_ERR_NON_FINITE). On the CPU backend it is mpd_plan. */
mpd_status mpd_plan_host(const mpd_model* model, mpd_workspace* workspace, const float* state,
                         uint64_t seed, const mpd_options* options, mpd_plan_output* output,
                         void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MPDIFFUSER_MPDIFFUSER_H_ */
