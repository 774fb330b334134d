#include "format/options.h"

#include <cmath>
#include <cstdio>

namespace mpd {

double option_value(const mpd_options& o, const OptionSpec& s) {
  return s.kind == OptionKind::kCount ? static_cast<double>(o.*s.count) : o.*s.real;
}

bool option_set(const mpd_options& o, const OptionSpec& s) {
  return s.kind != OptionKind::kOptionalReal || o.*s.has != 0;
}

void set_option(mpd_options* o, const OptionSpec& s, double value, bool set) {
  if (s.kind == OptionKind::kCount) {
    o->*s.count = static_cast<uint32_t>(value);
  } else {
    o->*s.real = set ? value : 0.0;
  }
  if (s.kind == OptionKind::kOptionalReal) o->*s.has = set ? 1u : 0u;
}

double option_high(const OptionSpec& s, int horizon, int num_steps) {
  switch (s.bound) {
    case MPD_BOUND_HORIZON:
      return horizon;
    case MPD_BOUND_LEVELS:
      return num_steps - 1;
    default:
      return s.high;
  }
}

mpd_options table_defaults() {
  mpd_options o{};
  for (const OptionSpec& s : kOptionSpecs) set_option(&o, s, s.default_value, s.kind != OptionKind::kOptionalReal);
  return o;
}

std::string option_range_message(const OptionSpec& s, double value, int horizon, int num_steps) {
  char text[320];
  std::snprintf(text, sizeof text, MPD_OPTION_RANGE_MESSAGE, s.name,
                s.kind == OptionKind::kCount ? MPD_OPTION_COUNT_WORD : MPD_OPTION_REAL_WORD, s.low,
                option_high(s, horizon, num_steps), value, s.help);
  return text;
}

}  // namespace mpd
