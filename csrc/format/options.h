// The sampler options' table (mpdiffuser/options.def) as data, and everything C++ does with an
// option generically: the defaults, the checks and their messages, the model file's default.<name>
// entries. The C struct mpd_options, the binding's fields and Python's SamplerOptions come from the
// same table, so an option is declared once.
#pragma once

#include <cstdint>
#include <string>

#include "mpdiffuser/mpdiffuser.h"

namespace mpd {

enum class OptionKind { kCount, kReal, kOptionalReal };
// Where an option's upper end comes from: the table's `high`, the horizon H, or K - 1.
enum OptionBound { MPD_BOUND_NONE, MPD_BOUND_HORIZON, MPD_BOUND_LEVELS };

struct OptionSpec {
  const char* name;
  OptionKind kind;
  uint32_t mpd_options::*count;  // kCount: the field
  double mpd_options::*real;     // kReal, kOptionalReal: the field
  uint32_t mpd_options::*has;    // kOptionalReal: its has_ flag
  double default_value, low, high;
  OptionBound bound;
  int since;           // model-file format version that introduced it
  const char* legacy;  // older files: a number, or the option whose value they used
  const char* flags;   // command-line flags, "" for none
  const char* help;
};

inline constexpr OptionSpec kOptionSpecs[] = {
#define MPD_OPTION_COUNT(n, d, lo, hi, b, s, leg, f, h) \
  {#n, OptionKind::kCount, &mpd_options::n, nullptr, nullptr, d, lo, hi, b, s, leg, f, h},
#define MPD_OPTION_REAL(n, d, lo, hi, b, s, leg, f, h) \
  {#n, OptionKind::kReal, nullptr, &mpd_options::n, nullptr, d, lo, hi, b, s, leg, f, h},
#define MPD_OPTION_OPTIONAL_REAL(n, d, lo, hi, b, s, leg, f, h) \
  {#n, OptionKind::kOptionalReal, nullptr, &mpd_options::n, &mpd_options::has_##n, d, lo, hi, b, s, leg, f, h},
#include "mpdiffuser/options.def"
};

// kOption_<name>: an option's index in kOptionSpecs.
enum OptionIndex : int {
#define MPD_OPTION_COUNT(n, ...) kOption_##n,
#define MPD_OPTION_REAL(n, ...) kOption_##n,
#define MPD_OPTION_OPTIONAL_REAL(n, ...) kOption_##n,
#include "mpdiffuser/options.def"
  kNumOptions
};

constexpr uint32_t kMaxCandidates = static_cast<uint32_t>(kOptionSpecs[kOption_num_candidates].high);

// The option's value as a double (counts are exact), and whether it is set (always, but for an
// unset optional one).
double option_value(const mpd_options& o, const OptionSpec& s);
bool option_set(const mpd_options& o, const OptionSpec& s);
// Sets the value (set = false unsets an optional option).
void set_option(mpd_options* o, const OptionSpec& s, double value, bool set = true);
// The upper end of the option's range for a model of this horizon and number of steps.
double option_high(const OptionSpec& s, int horizon, int num_steps);
// The table's defaults (what a new model file stores and SamplerOptions() holds).
mpd_options table_defaults();
// "name must be an integer in [lo, hi], got v (help)": the one message of an out-of-range value.
std::string option_range_message(const OptionSpec& s, double value, int horizon, int num_steps);

}  // namespace mpd
