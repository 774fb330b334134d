// The strict JSON reader: valid documents parse to the right values, malformed ones fail with a
// message and never crash.
#include <string>

#include "check.h"
#include "format/json.h"

using mpd::json::Value;

namespace {
bool parses(const std::string& text, Value* v = nullptr) {
  Value local;
  std::string error;
  return mpd::json::parse(text.data(), text.size(), v ? v : &local, &error);
}
}  // namespace

int main() {
  Value v;
  CHECK(parses(R"( {"a": [1, -2.5e3, true, null], "b": {"c": "x\"\\\n\u00e9\ud83d\ude00"}} )", &v));
  CHECK(v.kind == Value::Kind::kObject && v.object.size() == 2);
  const Value* a = v.find("a");
  CHECK(a && a->array.size() == 4 && a->array[0].is_integer && a->array[0].integer == 1);
  CHECK(a && a->array[1].number == -2500.0 && !a->array[1].is_integer);
  CHECK(a && a->array[2].boolean && a->array[3].kind == Value::Kind::kNull);
  const Value* b = v.find("b");
  CHECK(b && b->find("c") && b->find("c")->string == "x\"\\\n\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(parses("[]") && parses("{}") && parses("0") && parses("\"\""));
  const char* bad[] = {"", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "-", "\"abc", "\"\\x\"",
                       "tru", "[1] 2", "{\"a\":1,\"a\":2}", "\"\\ud800\"", "{1:2}", "\"a\nb\""};
  for (const char* text : bad) {
    if (parses(text)) {
      std::printf("accepted malformed JSON: %s\n", text);
      ++check::failures();
    }
  }
  // JSON text is UTF-8 (RFC 8259): invalid bytes, overlong forms, encoded surrogates, truncated
  // sequences and a lone low surrogate escape are refused; well-formed multi-byte text is kept.
  const char* bad_utf8[] = {"\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xe2\x82\"",
                            "\"\xf4\x90\x80\x80\"", "\"\\udc00\"", "\"a\x80\""};
  for (const char* text : bad_utf8) CHECK(!parses(text));
  Value u;
  CHECK(parses("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", &u) && u.string == "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  std::string deep(40, '['), close(40, ']');
  CHECK(!parses(deep + close));  // depth limit, no stack overflow
  return check::exit_code();
}
