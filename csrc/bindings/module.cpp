// mpdiffuser._core: the Python binding of the native core. The only file that includes pybind11.
// Every argument is checked here and raised as ValueError/TypeError naming it; the core below
// is called unchecked, with the GIL released for anything that takes time.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "math/philox.h"
#include "math/schedule.h"
#include "mpdiffuser/mpdiffuser.h"
#ifdef MPD_WITH_CUDA
#include "cuda/noise_kernel.h"
#endif

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
  throw std::runtime_error(std::string(what) + ": " + mpd_status_string(status));
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
#ifdef MPD_WITH_CUDA
  return mpd::cuda::device_available();
#else
  return false;
#endif
}

py::array_t<float> cuda_noise_normal(const py::object& seed, const py::object& candidate,
                                     const py::object& step, const py::object& count) {
  const uint64_t s = to_seed(seed);
  const uint32_t n = to_u32(candidate, "candidate"), k = to_u32(step, "step");
  const size_t c = to_count(count);
#ifdef MPD_WITH_CUDA
  py::array_t<float> out(static_cast<py::ssize_t>(c));
  float* data = out.mutable_data();
  mpd_status status;
  {
    py::gil_scoped_release release;
    status = mpd::cuda::fill_normal_host_via_device(s, n, k, data, c);
  }
  raise_status(status, "cuda fill_normal");
  return out;
#else
  (void)s, (void)n, (void)k, (void)c;
  throw std::runtime_error("mpdiffuser was built without CUDA (MPD_ENABLE_CUDA=OFF or no nvcc)");
#endif
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
  return info;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "Native core of mpdiffuser (C++/CUDA). Use the mpdiffuser package, not this module.";
  m.def("build_info", &build_info, "Version, compilers and whether the CUDA backend is compiled.");
  m.def("noise_normal", &noise_normal, py::arg("seed"), py::arg("candidate"), py::arg("step"),
        py::arg("count"), "z(seed, candidate, step)[0:count] as float32 [count] (DESIGN 3.1).");
  m.def("philox4x32_10", &philox4x32_10, py::arg("counter"), py::arg("key"),
        "The raw Philox4x32-10 block function: 4 counter words, 2 key words -> 4 words.");
  m.def("cosine_schedule", &cosine_schedule, py::arg("num_steps"),
        "Per-step coefficients (arrays of [num_steps], index k-1) of the cosine schedule.");
  m.def("cuda_device_available", &cuda_device_available,
        "True when the CUDA backend is compiled and a device is present.");
  m.def("cuda_noise_normal", &cuda_noise_normal, py::arg("seed"), py::arg("candidate"),
        py::arg("step"), py::arg("count"), "The noise generated by the CUDA kernel, copied to host.");
}
