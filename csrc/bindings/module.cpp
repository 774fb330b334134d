// mpdiffuser._core: the Python binding of the native core. The only file that includes pybind11.
// Every argument is checked here and raised as ValueError/TypeError naming it; the core below
// is called unchecked, with the GIL released for anything that takes time.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fstream>
#include <iterator>

#include "format/model_file.h"
#include "math/normalizer.h"
#include "math/philox.h"
#include "math/schedule.h"
#include "mpdiffuser/mpdiffuser.h"
#include "backend/backend.h"
#include "cpu/amx.h"

namespace py = pybind11;

namespace {

// An integer argument (any Python index: int, numpy integer) checked into [0, max], with its name
// in the TypeError/ValueError.
uint64_t checked_uint(const py::handle& value, const char* name, uint64_t max) {
  if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr())) {
    throw py::type_error(std::string(name) + " must be an integer, got " +
                         std::string(py::str(py::type::of(value).attr("__name__"))));
  }
  const py::int_ as_int = py::reinterpret_steal<py::int_>(PyNumber_Index(value.ptr()));
  const unsigned long long v = PyLong_AsUnsignedLongLong(as_int.ptr());
  if ((v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) || v > max) {
    PyErr_Clear();
    throw py::value_error(std::string(name) + " must be an integer in [0, " + std::to_string(max) +
                          "], got " + std::string(py::str(as_int)));
  }
  return v;
}

uint64_t to_seed(const py::object& v) { return checked_uint(v, "seed", UINT64_MAX); }
uint32_t to_u32(const py::handle& v, const char* name) {
  return static_cast<uint32_t>(checked_uint(v, name, UINT32_MAX));
}
// The counter's first word is the block e / 4, so one stream holds at most 2^34 elements.
size_t to_count(const py::object& v) { return checked_uint(v, "count", uint64_t{1} << 34); }

void raise_status(mpd_status status, const char* what) {
  if (status == MPD_OK) return;
  const std::string text = std::string(what) + ": " + mpd_status_string(status);
  if (status == MPD_ERR_NON_FINITE_PLAN) {  // a numerical failure, not a programming error
    PyErr_SetString(PyExc_FloatingPointError, text.c_str());
    throw py::error_already_set();
  }
  throw std::runtime_error(text);
}

py::array_t<float> noise_normal(const py::object& seed, const py::object& candidate,
                                const py::object& step, const py::object& count) {
  const uint64_t s = to_seed(seed);
  const uint32_t n = to_u32(candidate, "candidate"), k = to_u32(step, "step");
  const size_t c = to_count(count);
  py::array_t<float> out(static_cast<py::ssize_t>(c));
  float* data = out.mutable_data();
  mpd_status status;
  {
    py::gil_scoped_release release;
    status = mpd_noise_normal(s, n, k, data, c);
  }
  raise_status(status, "mpd_noise_normal");
  return out;
}

py::tuple philox4x32_10(const py::tuple& counter, const py::tuple& key) {
  if (counter.size() != 4) throw py::value_error("counter must be a tuple of 4 uint32 words");
  if (key.size() != 2) throw py::value_error("key must be a tuple of 2 uint32 words");
  mpd::math::Philox4 c{};
  for (int i = 0; i < 4; ++i) c.v[i] = to_u32(counter[i], "counter word");
  const mpd::math::Philox4 out = mpd::math::philox4x32_10(
      c, to_u32(key[0], "key word"), to_u32(key[1], "key word"));
  return py::make_tuple(out.v[0], out.v[1], out.v[2], out.v[3]);
}

py::dict cosine_schedule(int num_steps) {
  if (num_steps < 1 || num_steps > 10000) {
    throw py::value_error("num_steps must be in [1, 10000], got " + std::to_string(num_steps));
  }
  const char* names[] = {"beta", "alpha", "alpha_bar", "alpha_bar_prev", "posterior_c1",
                         "posterior_c2", "posterior_sigma"};
  py::array_t<double> columns[7];
  for (auto& column : columns) column = py::array_t<double>(num_steps);
  for (int k = 1; k <= num_steps; ++k) {
    const mpd::math::StepCoefficients s = mpd::math::cosine_step(k, num_steps);
    const double values[] = {s.beta, s.alpha, s.alpha_bar, s.alpha_bar_prev,
                             s.posterior_c1, s.posterior_c2, s.posterior_sigma};
    for (int i = 0; i < 7; ++i) columns[i].mutable_at(k - 1) = values[i];
  }
  py::dict out;
  for (int i = 0; i < 7; ++i) out[names[i]] = columns[i];
  return out;
}

bool cuda_device_available() {
  const mpd::BackendRecord* cuda = mpd::find_backend("cuda");
  return cuda->compiled && cuda->device_available();
}

py::array_t<float> cuda_noise_normal(const py::object& seed, const py::object& candidate,
                                     const py::object& step, const py::object& count) {
  const uint64_t s = to_seed(seed);
  const uint32_t n = to_u32(candidate, "candidate"), k = to_u32(step, "step");
  const size_t c = to_count(count);
  const mpd::BackendRecord* cuda = mpd::find_backend("cuda");
  if (!cuda->compiled || cuda->fill_normal_host == nullptr) {
    throw std::runtime_error("mpdiffuser was built without CUDA (MPD_ENABLE_CUDA=OFF or no nvcc)");
  }
  py::array_t<float> out(static_cast<py::ssize_t>(c));
  float* data = out.mutable_data();
  mpd_status status;
  {
    py::gil_scoped_release release;
    status = cuda->fill_normal_host(s, n, k, data, c);
  }
  raise_status(status, "cuda fill_normal");
  return out;
}

py::dict build_info() {
  py::dict info;
  info["version"] = mpd_version_string();
#ifdef MPD_WITH_CUDA
  info["cuda_compiled"] = true;
  info["cuda_architectures"] = MPD_CUDA_ARCHITECTURES_STRING;
  info["cuda_compiler"] = MPD_CUDA_COMPILER_STRING;
#else
  info["cuda_compiled"] = false;
  info["cuda_architectures"] = "";
  info["cuda_compiler"] = "";
#endif
  info["cxx_compiler"] = MPD_CXX_COMPILER_STRING;
  // Whether the CPU backend's fast numeric mode runs its convolutions on AMX tiles here (cpu/amx.h).
  info["cpu_amx"] = mpd::cpu::amx_available();
  return info;
}

// The option table (mpdiffuser/options.def) for Python: config.SamplerOptions, the model file's
// default.<name> entries and the command line's sampler flags are built from it.
py::list option_specs() {
  static const char* const kinds[] = {"count", "real", "optional_real"};
  static const char* const bounds[] = {"none", "horizon", "levels"};
  py::list out;
  for (const mpd::OptionSpec& s : mpd::kOptionSpecs) {
    py::dict d;
    d["name"] = s.name;
    d["kind"] = kinds[static_cast<int>(s.kind)];
    const bool count = s.kind == mpd::OptionKind::kCount;
    d["default"] = s.kind == mpd::OptionKind::kOptionalReal ? py::object(py::none())
                   : count ? py::object(py::int_(static_cast<int64_t>(s.default_value)))
                           : py::object(py::float_(s.default_value));
    d["low"] = count ? py::object(py::int_(static_cast<int64_t>(s.low))) : py::object(py::float_(s.low));
    d["high"] = count ? py::object(py::int_(static_cast<int64_t>(s.high))) : py::object(py::float_(s.high));
    d["bound"] = bounds[s.bound];
    d["since"] = s.since;
    d["legacy"] = s.legacy;
    d["flags"] = s.flags;
    d["help"] = s.help;
    out.append(d);
  }
  return out;
}

// The message the C API gives for an option value out of its range (one text in both languages).
std::string option_range_message(const std::string& name, double value, int horizon, int num_steps) {
  for (const mpd::OptionSpec& s : mpd::kOptionSpecs) {
    if (name == s.name) return mpd::option_range_message(s, value, horizon, num_steps);
  }
  throw py::key_error(name);
}

// The core's shared constants and name lists, for the cross-language check against
// python/mpdiffuser/config.py (tests/python/test_one_home.py).
py::dict constants() {
  py::dict d;
  d["model_format_version"] = mpd::kModelFormatVersion;
  d["embed_dim"] = mpd::kEmbedDim;
  d["termination_penalty"] = mpd::kTerminationPenalty;
  d["state_range_limit"] = mpd::math::kStateRangeLimit;
  d["max_candidates"] = mpd::kMaxCandidates;
  d["min_half_range"] = mpd::math::kMinHalfRange;
  auto names = [](const auto& table) {
    py::list out;
    for (const char* name : table) out.append(name);
    return out;
  };
  d["architectures"] = names(mpd::kArchitectureNames);
  d["predictions"] = names(mpd::kPredictionNames);
  d["normalizers"] = names(mpd::kNormalizerNames);
  d["writers"] = names(mpd::kWriterNames);
  d["return_conditions"] = names(mpd::kReturnConditionNames);
  py::list backends;  // the registry's native backends by id, compiled or not
  for (int id = 0; id < mpd::kBackendCount; ++id) backends.append(mpd::find_backend(id)->name);
  d["backends"] = backends;
  return d;
}

// The metadata keys the C++ reader uses when it loads the model file at `path`.
py::list model_file_keys(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw py::value_error("cannot open '" + path + "'");
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  mpd::ModelFile file;
  std::string error;
  if (mpd::read_model_file(bytes.data(), bytes.size(), &file, &error) != MPD_OK) throw py::value_error(error);
  py::list keys;
  for (const std::string& k : file.metadata_read) keys.append(k);
  return keys;
}

// ---- The sampler: Model and Workspace over the C API -----------------------------------------

class Model {
 public:
  explicit Model(const std::string& path) {
    char message[1024] = {0};
    mpd_model* model = nullptr;
    mpd_status status;
    {
      py::gil_scoped_release release;
      status = mpd_model_load(path.c_str(), &model, message, sizeof message);
    }
    if (status == MPD_ERR_IO) {
      PyErr_SetString(PyExc_FileNotFoundError, message);
      throw py::error_already_set();
    }
    if (status != MPD_OK) throw py::value_error(message[0] ? message : mpd_status_string(status));
    model_.reset(model);
    mpd_model_get_info(model, &info_);
  }
  const mpd_model* get() const { return model_.get(); }
  const mpd_model_info& info() const { return info_; }

  py::dict info_dict() const {
    py::dict d;
    d["env_id"] = std::string(info_.env_id);
    d["state_dim"] = info_.state_dim;
    d["action_dim"] = info_.action_dim;
    d["cond_dim"] = info_.cond_dim;
    d["horizon"] = info_.horizon;
    d["num_steps"] = info_.num_steps;
    d["width"] = info_.width;
    d["layers"] = info_.layers;
    d["ranker_width"] = info_.ranker_width;
    d["ranker_layers"] = info_.ranker_layers;
    d["reward_outputs"] = info_.reward_outputs;
    d["has_cost"] = info_.has_cost != 0;
    d["format_version"] = info_.format_version;
    d["digest_verified"] = info_.digest_verified != 0;
    d["prediction"] = info_.prediction == MPD_PREDICT_SAMPLE ? "sample" : "epsilon";
    d["architecture"] = info_.architecture == MPD_ARCH_UNET ? "unet" : "mlp";
    return d;
  }
  mpd_options default_options() const {
    mpd_options o;
    mpd_model_default_options(model_.get(), &o);
    return o;
  }

 private:
  struct Free {
    void operator()(mpd_model* m) const { mpd_model_free(m); }
  };
  std::unique_ptr<mpd_model, Free> model_;
  mpd_model_info info_{};
};

mpd_backend parse_backend(const std::string& name) {
  if (const mpd::BackendRecord* r = mpd::find_backend(name)) return r->id;
  throw py::value_error("backend must be " + mpd::backend_names() + ", got '" + name + "'");
}

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A float32 C-contiguous copy (or view) of `value` with exactly `shape`, else ValueError naming it.
FloatArray checked_floats(const py::handle& value, const char* name, const std::vector<py::ssize_t>& shape) {
  if (!py::isinstance<py::array>(value) && !py::isinstance<py::sequence>(value)) {
    throw py::type_error(std::string(name) + " must be an array of float32, got " +
                         std::string(py::str(py::type::of(value).attr("__name__"))));
  }
  FloatArray a = FloatArray::ensure(value);
  if (!a) throw py::type_error(std::string(name) + " cannot be converted to float32");
  bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; same && i < shape.size(); ++i) same = a.shape(static_cast<py::ssize_t>(i)) == shape[i];
  if (!same) {
    std::string want = "(", got = "(";
    for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
    for (py::ssize_t i = 0; i < a.ndim(); ++i) got += (i ? ", " : "") + std::to_string(a.shape(i));
    throw py::value_error(std::string(name) + " must have shape " + want + (shape.size() == 1 ? ",)" : ")") +
                          ", got " + got + (a.ndim() == 1 ? ",)" : ")"));
  }
  return a;
}

// Plans of at least this many candidate-steps (batch x N x K) run interruptibly (plan_batch).
constexpr uint64_t kLongPlanCandidateSteps = uint64_t{1} << 16;

class Workspace {
 public:
  Workspace(std::shared_ptr<Model> model, const std::string& backend, const py::object& max_candidates,
            const py::object& threads)
      : model_(std::move(model)) {
    const uint32_t n = static_cast<uint32_t>(checked_uint(max_candidates, "max_candidates", mpd::kMaxCandidates));
    const uint32_t t = static_cast<uint32_t>(checked_uint(threads, "threads", 1024));
    if (n < 1) throw py::value_error("max_candidates must be >= 1");
    mpd_workspace* ws = nullptr;
    const mpd_status status = mpd_workspace_create(model_->get(), parse_backend(backend), n, t, &ws);
    if (status == MPD_ERR_NOT_AVAILABLE) {
      throw std::runtime_error("backend '" + backend + "' is not available: " + mpd_status_string(status));
    }
    raise_status(status, "mpd_workspace_create");
    workspace_.reset(ws);
    max_candidates_ = n;
    backend_ = parse_backend(backend);
  }

  // One plan per row of states [B, dx] with seeds [B], warm-started from warm_starts [B, H, D]
  // when not None: (actions [B, a, du], index [B], values [B, N], costs [B, N] or None,
  // windows [B, N, H, D] or None).
  py::tuple plan_batch(const py::handle& states, const py::handle& seeds, const mpd_options& options,
                       bool return_windows, const py::object& warm_starts) {
    const mpd_model_info& info = model_->info();
    const auto dx = static_cast<py::ssize_t>(info.state_dim);
    py::array state_probe = py::array::ensure(states);
    if (!state_probe || state_probe.ndim() != 2) throw py::value_error("states must be a 2-D array [batch, state_dim]");
    const py::ssize_t batch = state_probe.shape(0);
    FloatArray s = checked_floats(states, "states", {batch, dx});
    py::array_t<uint64_t, py::array::c_style | py::array::forcecast> seed_array;
    {
      py::array probe = py::array::ensure(seeds);
      if (!probe || probe.ndim() != 1 || probe.shape(0) != batch) {
        throw py::value_error("seeds must be a 1-D integer array of length " + std::to_string(batch));
      }
      if (probe.dtype().kind() != 'i' && probe.dtype().kind() != 'u') throw py::type_error("seeds must be integers");
      py::module_ np = py::module_::import("numpy");
      if (probe.size() && probe.dtype().kind() == 'i' && py::bool_(np.attr("any")(np.attr("less")(probe, 0)))) {
        throw py::value_error("seeds must be non-negative");
      }
      seed_array = probe;
    }
    if (options.num_candidates < 1 || options.num_candidates > max_candidates_) {
      throw py::value_error("num_candidates must be in [1, " + std::to_string(max_candidates_) +
                            "] for this sampler, got " + std::to_string(options.num_candidates));
    }
    char message[512] = {0};
    if (mpd_options_check(model_->get(), &options, message, sizeof message) != MPD_OK) throw py::value_error(message);
    const float* sp = s.data();
    for (py::ssize_t i = 0; i < batch * dx; ++i) {
      if (!std::isfinite(sp[i])) {
        throw py::value_error("state holds NaN or infinity at row " + std::to_string(i / dx) + ", index " +
                              std::to_string(i % dx));
      }
    }
    const auto N = static_cast<py::ssize_t>(options.num_candidates);
    const auto H = static_cast<py::ssize_t>(info.horizon), D = static_cast<py::ssize_t>(info.state_dim + info.action_dim);
    FloatArray warm;
    if (!warm_starts.is_none()) {
      warm = checked_floats(warm_starts, "warm_starts", {batch, H, D});
      for (py::ssize_t i = 0; i < batch * H * D; ++i) {
        if (!std::isfinite(warm.data()[i])) {
          throw py::value_error("warm_starts hold NaN or infinity in row " + std::to_string(i / (H * D)));
        }
      }
    }
    const float* wp = warm_starts.is_none() ? nullptr : warm.data();
    py::array_t<float> actions({batch, static_cast<py::ssize_t>(options.actions_per_plan),
                                static_cast<py::ssize_t>(info.action_dim)});
    py::array_t<uint32_t> index(batch);
    py::array_t<float> values({batch, N});
    py::array_t<float> costs({batch, info.has_cost ? N : 0});
    py::array_t<float> windows(return_windows ? std::vector<py::ssize_t>{batch, N, H, D} : std::vector<py::ssize_t>{0});
    const uint64_t* seed_data = seed_array.data();
    float* a = actions.mutable_data();
    uint32_t* idx = index.mutable_data();
    float* v = values.mutable_data();
    float* c = costs.mutable_data();
    float* w = windows.mutable_data();
    mpd_status status = MPD_OK;
    py::ssize_t b = 0;
    auto run = [&]() {
      for (; b < batch; ++b) {
        mpd_plan_output out{a + b * options.actions_per_plan * info.action_dim, 0, v + b * N,
                            info.has_cost ? c + b * N : nullptr, return_windows ? w + b * N * H * D : nullptr,
                            nullptr, nullptr};
        status = mpd_plan_warm_host(model_->get(), workspace_.get(), sp + b * dx, wp ? wp + b * H * D : nullptr,
                                    seed_data[b], &options, &out, nullptr);
        idx[b] = out.index;
        if (status != MPD_OK) break;
      }
    };
    bool interrupted = false;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      // A long CPU plan runs on a helper thread while this one answers Ctrl-C: every 50 ms it
      // takes the GIL to run Python's signal handlers and, on KeyboardInterrupt, cancels the plan
      // (it stops at its next denoising step). Short plans run here, without the thread's cost.
      const uint64_t candidate_steps = static_cast<uint64_t>(batch) * static_cast<uint64_t>(N) * info.num_steps;
      if (backend_ == MPD_BACKEND_CPU && candidate_steps >= kLongPlanCandidateSteps) {
        std::packaged_task<void()> task(run);
        std::future<void> done = task.get_future();
        std::thread worker(std::move(task));
        while (done.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
          py::gil_scoped_acquire acquire;
          if (!interrupted && PyErr_CheckSignals() != 0) {
            interrupted = true;
            mpd_workspace_cancel(workspace_.get());
          }
        }
        worker.join();
      } else {
        run();
      }
    }
    if (interrupted) throw py::error_already_set();  // the KeyboardInterrupt (or a handler's error)
    raise_status(status, ("mpd_plan (row " + std::to_string(b) + ", seed " +
                          std::to_string(b < batch ? seed_data[b] : 0) + ")").c_str());
    return py::make_tuple(actions, index, values, info.has_cost ? py::object(costs) : py::none(),
                          return_windows ? py::object(windows) : py::none());
  }

  // CUDA backend: one plan from device memory into device memory, asynchronously on `stream`
  // (raw pointers and a cudaStream_t as integers; mpdiffuser.Sampler.plan_device checks the
  // arrays they come from). No synchronization, no copy.
  void plan_device(uintptr_t state, uint64_t seed, const mpd_options& options, uintptr_t actions, uintptr_t index,
                   uintptr_t values, uintptr_t costs, uintptr_t windows, uintptr_t stream) {
    if (backend_ != MPD_BACKEND_CUDA) throw py::value_error("plan_device needs a 'cuda' workspace");
    if (options.num_candidates < 1 || options.num_candidates > max_candidates_) {
      throw py::value_error("num_candidates must be in [1, " + std::to_string(max_candidates_) + "]");
    }
    char message[512] = {0};
    if (mpd_options_check(model_->get(), &options, message, sizeof message) != MPD_OK) throw py::value_error(message);
    auto ptr = [](uintptr_t p) { return reinterpret_cast<float*>(p); };
    mpd_plan_output out{ptr(actions), 0, ptr(values), ptr(costs), ptr(windows), reinterpret_cast<uint32_t*>(index),
                        nullptr};
    mpd_status status;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      status = mpd_plan(model_->get(), workspace_.get(), reinterpret_cast<const float*>(state), seed, &options, &out,
                        reinterpret_cast<void*>(stream));
    }
    raise_status(status, "mpd_plan");
  }

  uint32_t max_candidates() const { return max_candidates_; }

 private:
  struct Free {
    void operator()(mpd_workspace* w) const { mpd_workspace_free(w); }
  };
  std::shared_ptr<Model> model_;  // keeps the model alive while the workspace lives
  std::unique_ptr<mpd_workspace, Free> workspace_;
  std::mutex mutex_;  // one plan at a time per workspace
  uint32_t max_candidates_ = 0;
  mpd_backend backend_ = MPD_BACKEND_CPU;
};

void bind_sampler(py::module_& m) {
  // The C struct's fields, one property per option of the table (mpdiffuser/options.def), plus
  // has_<name> for the optional ones; a new Options holds the table's defaults.
  auto options = py::class_<mpd_options>(m, "Options", "Mirror of the C struct mpd_options (use mpdiffuser.SamplerOptions).")
                     .def(py::init([] { return mpd::table_defaults(); }));
  static std::vector<std::string> has_names;  // property names must outlive the module
  has_names.reserve(mpd::kNumOptions);
  for (const mpd::OptionSpec& spec : mpd::kOptionSpecs) {
    const mpd::OptionSpec* s = &spec;
    options.def_property(
        s->name,
        [s](const mpd_options& o) -> py::object {
          if (s->kind == mpd::OptionKind::kCount) return py::int_(o.*s->count);
          return py::float_(o.*s->real);
        },
        [s](mpd_options& o, const py::object& value) {
          if (s->kind == mpd::OptionKind::kCount) {
            o.*s->count = value.cast<uint32_t>();
          } else {
            o.*s->real = value.cast<double>();
          }
        });
    if (s->kind == mpd::OptionKind::kOptionalReal) {
      has_names.push_back(std::string("has_") + s->name);
      options.def_property(
          has_names.back().c_str(), [s](const mpd_options& o) { return o.*s->has; },
          [s](mpd_options& o, uint32_t value) { o.*s->has = value; });
    }
  }
  py::class_<Model, std::shared_ptr<Model>>(m, "Model", "A loaded, validated model file (immutable).")
      .def(py::init<const std::string&>(), py::arg("path"))
      .def("info", &Model::info_dict)
      .def("default_options", &Model::default_options)
      .def(
          "workspace_bytes",
          [](const Model& model, const std::string& backend, const py::object& max_candidates,
             const py::object& threads) {
            const uint32_t n = static_cast<uint32_t>(checked_uint(max_candidates, "max_candidates", mpd::kMaxCandidates));
            const uint32_t t = static_cast<uint32_t>(checked_uint(threads, "threads", 1024));
            size_t bytes = 0;
            raise_status(mpd_workspace_bytes(model.get(), parse_backend(backend), n, t, &bytes),
                         "mpd_workspace_bytes");
            return bytes;
          },
          py::arg("backend"), py::arg("max_candidates"), py::arg("threads"),
          "The bytes a CPU workspace of these sizes allocates (mpd_workspace_bytes).");
  py::class_<Workspace>(m, "Workspace", "A sampler workspace sized once for max_candidates.")
      .def(py::init<std::shared_ptr<Model>, const std::string&, const py::object&, const py::object&>(),
           py::arg("model"), py::arg("backend"), py::arg("max_candidates"), py::arg("threads"))
      .def_property_readonly("max_candidates", &Workspace::max_candidates)
      .def("plan_batch", &Workspace::plan_batch, py::arg("states"), py::arg("seeds"), py::arg("options"),
           py::arg("return_windows") = true, py::arg("warm_starts") = py::none())
      .def("plan_device", &Workspace::plan_device, py::arg("state"), py::arg("seed"), py::arg("options"),
           py::arg("actions"), py::arg("index"), py::arg("values"), py::arg("costs"), py::arg("windows"),
           py::arg("stream"));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "Native core of mpdiffuser (C++/CUDA). Use the mpdiffuser package, not this module.";
  m.def("build_info", &build_info, "Version, compilers and whether the CUDA backend is compiled.");
  m.def("noise_normal", &noise_normal, py::arg("seed"), py::arg("candidate"), py::arg("step"),
        py::arg("count"), "z(seed, candidate, step)[0:count] as float32 [count] (design section 3.1).");
  m.def("philox4x32_10", &philox4x32_10, py::arg("counter"), py::arg("key"),
        "The raw Philox4x32-10 block function: 4 counter words, 2 key words -> 4 words.");
  m.def("cosine_schedule", &cosine_schedule, py::arg("num_steps"),
        "Per-step coefficients (arrays of [num_steps], index k-1) of the cosine schedule.");
  m.def("cuda_device_available", &cuda_device_available,
        "True when the CUDA backend is compiled and a device is present.");
  m.def("cuda_noise_normal", &cuda_noise_normal, py::arg("seed"), py::arg("candidate"),
        py::arg("step"), py::arg("count"), "The noise generated by the CUDA kernel, copied to host.");
  m.def("constants", &constants, "The core's shared constants and metadata name lists.");
  m.def("option_specs", &option_specs, "The sampler options' table (mpdiffuser/options.def), one dict per option.");
  m.def("option_range_message", &option_range_message, py::arg("name"), py::arg("value"), py::arg("horizon"),
        py::arg("num_steps"), "The C API's message for an out-of-range option value.");
  m.def("model_file_keys", &model_file_keys, py::arg("path"),
        "The metadata keys the C++ reader uses when it loads this model file.");
  bind_sampler(m);
}
