// The strict JSON reader of json.h: recursive descent with a depth limit.
#include "format/json.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace mpd::json {

const Value* Value::find(const std::string& key) const {
  for (const auto& member : object) {
    if (member.first == key) return &member.second;
  }
  return nullptr;
}

namespace {

constexpr int kMaxDepth = 32;

class Parser {
 public:
  Parser(const char* text, size_t size) : text_(text), size_(size) {}

  bool parse_document(Value* out, std::string* error) {
    skip_space();
    if (!parse_value(out, 0)) {
      *error = error_;
      return false;
    }
    skip_space();
    if (pos_ != size_) {
      *error = "unexpected trailing characters at offset " + std::to_string(pos_);
      return false;
    }
    return true;
  }

 private:
  bool fail(const std::string& what) {
    if (error_.empty()) error_ = what + " at offset " + std::to_string(pos_);
    return false;
  }
  void skip_space() {
    while (pos_ < size_ && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' ||
                            text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool literal(const char* word) {
    const size_t n = std::strlen(word);
    if (size_ - pos_ < n || std::memcmp(text_ + pos_, word, n) != 0) return fail("invalid literal");
    pos_ += n;
    return true;
  }

  bool parse_value(Value* out, int depth) {
    if (depth > kMaxDepth) return fail("nesting deeper than 32");
    if (pos_ >= size_) return fail("unexpected end of JSON");
    const char c = text_[pos_];
    if (c == '{') return parse_object(out, depth);
    if (c == '[') return parse_array(out, depth);
    if (c == '"') {
      out->kind = Value::Kind::kString;
      return parse_string(&out->string);
    }
    if (c == 't') {
      out->kind = Value::Kind::kBool;
      out->boolean = true;
      return literal("true");
    }
    if (c == 'f') {
      out->kind = Value::Kind::kBool;
      out->boolean = false;
      return literal("false");
    }
    if (c == 'n') {
      out->kind = Value::Kind::kNull;
      return literal("null");
    }
    return parse_number(out);
  }

  bool parse_object(Value* out, int depth) {
    out->kind = Value::Kind::kObject;
    ++pos_;  // '{'
    skip_space();
    if (pos_ < size_ && text_[pos_] == '}') {
      ++pos_;
      return true;
    }
    for (;;) {
      skip_space();
      if (pos_ >= size_ || text_[pos_] != '"') return fail("expected a string key");
      std::string key;
      if (!parse_string(&key)) return false;
      skip_space();
      if (pos_ >= size_ || text_[pos_] != ':') return fail("expected ':'");
      ++pos_;
      skip_space();
      if (out->find(key) != nullptr) return fail("duplicate key \"" + key + "\"");
      out->object.emplace_back(std::move(key), Value{});
      if (!parse_value(&out->object.back().second, depth + 1)) return false;
      skip_space();
      if (pos_ < size_ && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < size_ && text_[pos_] == '}') {
        ++pos_;
        return true;
      }
      return fail("expected ',' or '}'");
    }
  }

  bool parse_array(Value* out, int depth) {
    out->kind = Value::Kind::kArray;
    ++pos_;  // '['
    skip_space();
    if (pos_ < size_ && text_[pos_] == ']') {
      ++pos_;
      return true;
    }
    for (;;) {
      skip_space();
      out->array.emplace_back();
      if (!parse_value(&out->array.back(), depth + 1)) return false;
      skip_space();
      if (pos_ < size_ && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < size_ && text_[pos_] == ']') {
        ++pos_;
        return true;
      }
      return fail("expected ',' or ']'");
    }
  }

  static void append_utf8(uint32_t cp, std::string* s) {
    if (cp < 0x80) {
      s->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // One well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates, at most
  // U+10FFFF) whose lead byte was just read; appended to out. JSON text must be UTF-8 (RFC 8259).
  bool utf8_sequence(unsigned char lead, std::string* out) {
    int extra = 0;
    uint32_t cp = 0, least = 0;
    if (lead >= 0xC2 && lead <= 0xDF) {
      extra = 1, cp = lead & 0x1Fu, least = 0x80;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      extra = 2, cp = lead & 0x0Fu, least = 0x800;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      extra = 3, cp = lead & 0x07u, least = 0x10000;
    } else {
      return false;
    }
    if (size_ - pos_ < static_cast<size_t>(extra)) return false;
    for (int i = 0; i < extra; ++i) {
      const auto b = static_cast<unsigned char>(text_[pos_ + i]);
      if ((b & 0xC0u) != 0x80u) return false;
      cp = (cp << 6) | (b & 0x3Fu);
    }
    if (cp < least || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return false;
    out->push_back(static_cast<char>(lead));
    out->append(text_ + pos_, static_cast<size_t>(extra));
    pos_ += static_cast<size_t>(extra);
    return true;
  }

  bool parse_hex4(uint32_t* out) {
    if (size_ - pos_ < 4) return fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<uint32_t>(h - 'A' + 10);
      else return fail("bad hex digit in \\u escape");
    }
    *out = v;
    return true;
  }

  bool parse_string(std::string* out) {
    ++pos_;  // '"'
    while (pos_ < size_) {
      const char c = text_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in string");
      if (static_cast<unsigned char>(c) >= 0x80) {
        if (!utf8_sequence(static_cast<unsigned char>(c), out)) return fail("invalid UTF-8 in string");
        continue;
      }
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (pos_ >= size_) break;
      const char e = text_[pos_++];
      switch (e) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!parse_hex4(&cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair
            uint32_t low = 0;
            if (size_ - pos_ < 2 || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') {
              return fail("unpaired surrogate in string");
            }
            pos_ += 2;
            if (!parse_hex4(&low) || low < 0xDC00 || low >= 0xE000) return fail("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            return fail("unpaired surrogate in string");
          }
          append_utf8(cp, out);
          break;
        }
        default: return fail("invalid escape in string");
      }
    }
    return fail("unterminated string");
  }

  bool parse_number(Value* out) {
    const size_t start = pos_;
    bool integral = true;
    if (pos_ < size_ && text_[pos_] == '-') ++pos_;
    if (pos_ >= size_ || text_[pos_] < '0' || text_[pos_] > '9') return fail("invalid value");
    if (text_[pos_] == '0') {
      ++pos_;
    } else {
      while (pos_ < size_ && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    }
    if (pos_ < size_ && text_[pos_] == '.') {
      integral = false;
      ++pos_;
      if (pos_ >= size_ || text_[pos_] < '0' || text_[pos_] > '9') return fail("invalid number");
      while (pos_ < size_ && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    }
    if (pos_ < size_ && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (pos_ < size_ && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (pos_ >= size_ || text_[pos_] < '0' || text_[pos_] > '9') return fail("invalid number");
      while (pos_ < size_ && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    }
    const std::string token(text_ + start, pos_ - start);
    out->kind = Value::Kind::kNumber;
    out->number = std::strtod(token.c_str(), nullptr);
    if (integral) {
      errno = 0;
      const long long v = std::strtoll(token.c_str(), nullptr, 10);
      out->is_integer = errno == 0;
      out->integer = v;
    }
    return true;
  }

  const char* text_;
  size_t size_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace

bool parse(const char* text, size_t size, Value* out, std::string* error) {
  *out = Value{};
  Parser parser(text, size);
  return parser.parse_document(out, error);
}

}  // namespace mpd::json
