// Fuzz target over the torch-free parsers and the tokenizer: safetensors headers, Hugging Face config.json and
// tokenizer.json, and encode/decode of arbitrary bytes. Built with clang -fsanitize=fuzzer,
// LLVMFuzzerTestOneInput is the libFuzzer entry point. Built as here (g++ with ASan/UBSan), main() is a
// self-contained mutation driver:
//   fuzz_parsers [--iterations N] [--seed S] CONFIG.json...   (--help lists the options)
// Parsers may reject input only with kvforge::InputError; any other exception, crash or sanitizer
// report is a bug. Encoding must also round-trip (see round_trip).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "runtime/input_error.h"
#include "runtime/json_file.h"
#include "runtime/model_config.h"
#include "runtime/safetensors.h"
#include "runtime/tokenizer.h"

namespace {

// What data[0] % 4 selects.
enum Target : uint8_t { kSafetensors = 0, kConfig = 1, kTokenizerJson = 2, kEncode = 3 };
// For kEncode, data[0] & kNfcBit picks the tokenizer with the NFC normalizer.
constexpr uint8_t kNfcBit = 4;

// How many inputs each target accepted, and how many round trips were compared: a seed that mutations almost
// never keep valid would leave the deeper code unfuzzed, and these numbers show it.
long accepted[4] = {};
long round_trips_compared = 0;

[[noreturn]] void fail(const std::string& what, const std::string& input) {
  std::fprintf(stderr, "fuzz_parsers: %s; input bytes:", what.c_str());
  for (const char byte : input) std::fprintf(stderr, " %02x", static_cast<unsigned char>(byte));
  std::fprintf(stderr, "\n");
  std::abort();
}

// Well-formed UTF-8 per Unicode's table 3-7, written apart from kvforge's own check so the two test each other.
bool is_valid_utf8(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    int continuation_bytes = 0;
    unsigned char second_low = 0x80;
    unsigned char second_high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
      continuation_bytes = 1;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      continuation_bytes = 2;
      if (lead == 0xE0) second_low = 0xA0;   // overlong
      if (lead == 0xED) second_high = 0x9F;  // surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      continuation_bytes = 3;
      if (lead == 0xF0) second_low = 0x90;   // overlong
      if (lead == 0xF4) second_high = 0x8F;  // past U+10FFFF
    } else {
      return false;
    }
    for (int k = 1; k <= continuation_bytes; ++k) {
      if (i + k >= text.size()) return false;
      const auto byte = static_cast<unsigned char>(text[i + k]);
      const unsigned char low = k == 1 ? second_low : 0x80;
      const unsigned char high = k == 1 ? second_high : 0xBF;
      if (byte < low || byte > high) return false;
    }
    i += continuation_bytes + 1;
  }
  return true;
}

// The round-trip tokenizer's added tokens; text holding one of them may lose whitespace to lstrip/rstrip.
const char* const kAddedTokens[] = {"<|endoftext|>", "<|im_start|>", "qq"};

bool has_added_token_text(const std::string& text) {
  return std::any_of(std::begin(kAddedTokens), std::end(kAddedTokens),
                     [&](const char* token) { return text.find(token) != std::string::npos; });
}

// Every byte is a token, so every text can round-trip; on top, a few merges, Llama 3's split regex, individual
// digits, added tokens with each matching option and a BOS template. `nfc` adds an NFC normalizer.
kvforge::Tokenizer round_trip_tokenizer(bool nfc) {
  using Json = nlohmann::json;
  Json root = Json::parse(kvforge::byte_tokenizer_json({kAddedTokens[0]}));
  int64_t next_id = 257;  // after the 256 bytes and <|endoftext|>
  const char* const merges[][2] = {{"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"},
                                   {"e", "r"}, {"Ã", "©"}, {"1", "2"}};
  for (const auto& [left, right] : merges) {
    root["model"]["vocab"][std::string(left) + right] = next_id++;
    root["model"]["merges"].push_back(std::string(left) + " " + right);
  }
  root["added_tokens"].push_back({{"id", next_id++},
                                  {"content", kAddedTokens[1]},
                                  {"single_word", false},
                                  {"lstrip", true},
                                  {"rstrip", true},
                                  {"normalized", true},
                                  {"special", true}});
  root["added_tokens"].push_back({{"id", next_id++},
                                  {"content", kAddedTokens[2]},
                                  {"single_word", true},
                                  {"lstrip", false},
                                  {"rstrip", false},
                                  {"normalized", true},
                                  {"special", false}});
  const Json split = {
      {"type", "Split"},
      {"pattern",
       {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*)"
                  R"(|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
      {"behavior", "Isolated"},
      {"invert", false}};
  const Json digits = {{"type", "Digits"}, {"individual_digits", true}};
  root["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split, digits, root["pre_tokenizer"]}}};
  root["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", kAddedTokens[0]}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens",
       {{kAddedTokens[0], {{"id", kAddedTokens[0]}, {"ids", {256}}, {"tokens", {kAddedTokens[0]}}}}}}};
  if (nfc) root["normalizer"] = {{"type", "NFC"}};
  return kvforge::Tokenizer::from_json_text(root.dump(), "fuzz/round_trip_tokenizer.json");
}

// The checks on valid `text` that encoded to `ids`: the template, decoding arbitrary ids, and the round trip.
void check_round_trip(const kvforge::Tokenizer& tokenizer, const std::string& text, const std::vector<int64_t>& ids,
                      bool nfc) {
  std::vector<int64_t> expected_with_bos = {256};
  expected_with_bos.insert(expected_with_bos.end(), ids.begin(), ids.end());
  if (tokenizer.encode(text) != expected_with_bos) fail("the template did not prepend <|endoftext|> alone", text);

  // Ids that name nothing are skipped: decoding the input's bytes read as ids must not go out of bounds.
  std::vector<int64_t> arbitrary_ids;
  for (size_t i = 0; i + 1 < text.size(); i += 2) {
    arbitrary_ids.push_back(
        static_cast<int16_t>(static_cast<uint8_t>(text[i]) | static_cast<uint8_t>(text[i + 1]) << 8));
  }
  (void)tokenizer.decode(arbitrary_ids, /*skip_special_tokens=*/text.size() % 2 == 0);

  const std::string decoded = tokenizer.decode(ids);
  if (has_added_token_text(text) || has_added_token_text(decoded)) return;
  ++round_trips_compared;
  if (!nfc && decoded != text) fail("decode(encode(text)) differs from the text", text);
  if (nfc && tokenizer.encode(decoded, /*add_special_tokens=*/false) != ids) {
    fail("the NFC form of the text encodes differently from the text", text);
  }
}

// Invalid UTF-8 must be an InputError; valid text must encode, take the template, and decode back to itself
// (to its NFC form with `nfc`, which must then encode to the same ids) unless it holds added-token text.
// Returns whether the text was valid.
bool round_trip(const std::string& text, bool nfc) {
  static const kvforge::Tokenizer plain = round_trip_tokenizer(false);
  static const kvforge::Tokenizer normalizing = round_trip_tokenizer(true);
  const kvforge::Tokenizer& tokenizer = nfc ? normalizing : plain;
  const bool valid = is_valid_utf8(text);
  std::vector<int64_t> ids;
  try {
    ids = tokenizer.encode(text, /*add_special_tokens=*/false);
  } catch (const kvforge::InputError& error) {
    if (valid) fail(std::string("valid UTF-8 rejected: ") + error.what(), text);
    return false;
  }
  if (!valid) fail("invalid UTF-8 accepted", text);
  try {
    check_round_trip(tokenizer, text, ids, nfc);
  } catch (const kvforge::InputError& error) {
    fail(std::string("InputError after valid text encoded: ") + error.what(), text);
  }
  return true;
}

// After a mutated tokenizer.json parses, use it: encode and decode a text touching each feature of the seed.
void exercise(const kvforge::Tokenizer& tokenizer) {
  const std::string text = "ab abc-d \u00e9 e\u0301 12345 <|endoftext|>x <|im_start|> qq zz\u212b";
  const std::vector<int64_t> ids = tokenizer.encode(text);
  (void)tokenizer.decode(ids, /*skip_special_tokens=*/true);
  std::vector<int64_t> every_id(std::min<int64_t>(tokenizer.vocab_size(), 64) + 1);
  for (size_t id = 0; id < every_id.size(); ++id) every_id[id] = static_cast<int64_t>(id) - 1;
  (void)tokenizer.decode(every_id);
  for (const int64_t id : every_id) {
    if (const auto token = tokenizer.id_to_token(id)) (void)tokenizer.token_to_id(*token);
  }
}

// The first byte picks the target; the rest is its input.
void parse_one(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    switch (data[0] % 4) {
      case kSafetensors: {
        kvforge::SafetensorsFile file = kvforge::SafetensorsFile::from_bytes(body, "fuzz.safetensors");
        for (const kvforge::TensorEntry& entry : file.tensors()) {
          // Touch the first and last byte of every tensor: offsets were validated, so this stays in bounds.
          volatile uint8_t sink = 0;
          if (entry.end > entry.begin) sink = file.data(entry)[0] ^ file.data(entry)[entry.end - entry.begin - 1];
          (void)sink;
        }
        break;
      }
      case kConfig:
        kvforge::ModelConfig::from_json(kvforge::parse_json(body, "fuzz/config.json"), "fuzz/config.json");
        break;
      case kTokenizerJson:
        exercise(kvforge::Tokenizer::from_json_text(body, "fuzz/tokenizer.json"));
        break;
      case kEncode:
        if (!round_trip(body, (data[0] & kNfcBit) != 0)) return;
        break;
    }
    ++accepted[data[0] % 4];
  } catch (const kvforge::InputError&) {
    // Rejected with a clear message: the expected outcome for bad input.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parser escaped with a non-InputError exception: %s\n", e.what());
    std::abort();
  }
}

std::string small_safetensors() {
  const std::string header =
      R"({"__metadata__":{"kvforge.method":"rlkv"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"I64","shape":[1],"data_offsets":[32,40]}})";
  std::string bytes(8, '\0');
  const uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  bytes += header;
  for (int i = 0; i < 40; ++i) bytes += static_cast<char>(i * 7);
  return bytes;
}

// A byte-level BPE tokenizer.json touching every supported feature (NFC, Split regex and string, Digits, merges,
// unk with fuse_unk, added tokens with each matching option, a template), with a tiny vocab: parsing it stays
// cheap enough for tens of thousands of runs under the sanitizers. Hugging Face tokenizers reads it too.
std::string small_tokenizer_json() {
  return R"({"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":15,"content":"<|endoftext|>",)"
         R"("single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":16,)"
         R"("content":"<|im_start|>","single_word":false,"lstrip":true,"rstrip":true,"normalized":true,)"
         R"("special":true},{"id":17,"content":"qq","single_word":true,"lstrip":false,"rstrip":false,)"
         R"("normalized":true,"special":false}],"normalizer":{"type":"Sequence","normalizers":[{"type":"NFC"}]},)"
         R"("pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split",)"
         R"("pattern":{"Regex":"\\s?\\p{L}+|\\p{N}{1,3}|\\s+(?!\\S)|[^\\s\\p{L}\\p{N}]+"},"behavior":"Isolated",)"
         R"("invert":false},{"type":"Digits","individual_digits":true},{"type":"Split","pattern":{"String":"-"},)"
         R"("behavior":"MergedWithNext","invert":false},{"type":"ByteLevel","add_prefix_space":false,)"
         R"("trim_offsets":true,"use_regex":false}]},"post_processor":{"type":"Sequence",)"
         R"("processors":[{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":false},)"
         R"({"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|endoftext|>","type_id":0}},)"
         R"({"Sequence":{"id":"A","type_id":0}}],"pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B",)"
         R"("type_id":1}}],"special_tokens":{"<|endoftext|>":{"id":"<|endoftext|>","ids":[15],)"
         R"("tokens":["<|endoftext|>"]}}}]},"decoder":{"type":"ByteLevel","add_prefix_space":false,)"
         R"("trim_offsets":false,"use_regex":false},"model":{"type":"BPE","dropout":null,"unk_token":"<unk>",)"
         R"("continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":true,"byte_fallback":false,)"
         R"("ignore_merges":false,"vocab":{"a":0,"b":1,"c":2,"d":3,"e":4,"Ġ":5,"1":6,"2":7,"Ã":8,"©":9,"ab":10,)"
         R"("abc":11,"Ġa":12,"Ã©":13,"<unk>":14},"merges":["a b","ab c","Ġ a","Ã ©"]}})";
}

using Dictionary = std::vector<std::string>;

std::string mutate(std::string input, const std::vector<std::string>& seeds, const Dictionary& dictionary,
                   std::mt19937_64& rng) {
  const int edits = 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits; ++e) {
    const size_t at = input.empty() ? 0 : rng() % input.size();
    switch (rng() % 7) {
      case 0:
        if (!input.empty()) input[at] = static_cast<char>(rng());
        break;
      case 1:
        if (!input.empty()) input[at] = static_cast<char>('0' + rng() % 10);
        break;
      case 2:
        input.insert(at, dictionary[rng() % dictionary.size()]);
        break;
      case 3:
        input.erase(at, rng() % 16);
        break;
      case 4:
        input.resize(at);
        break;
      case 5: {
        const std::string& other = seeds[rng() % seeds.size()];
        const size_t from = other.empty() ? 0 : rng() % other.size();
        input.insert(at, other.substr(from, rng() % 64));
        break;
      }
      default:
        if (!input.empty()) input.insert(at, input.substr(at, rng() % 32));
        break;
    }
  }
  return input;
}

using OrderedJson = nlohmann::ordered_json;

// A node below the root, found by walking down from it: each step goes into a random child or, after the first,
// stops with chance 1/4. Walking instead of listing every node keeps this cheap under ASan.
struct PickedNode {
  OrderedJson* parent;
  OrderedJson* node;
  std::string key;  // in an object parent
  size_t index;     // in an array parent
};

PickedNode pick_node(OrderedJson& root, std::mt19937_64& rng) {
  PickedNode picked{nullptr, &root, "", 0};
  while ((picked.node->is_object() || picked.node->is_array()) && !picked.node->empty() &&
         (picked.parent == nullptr || rng() % 4 != 0)) {
    OrderedJson& container = *picked.node;
    picked.parent = &container;
    picked.index = rng() % container.size();
    if (container.is_object()) {
      auto child = container.begin();
      std::advance(child, picked.index);
      picked.key = child.key();
      picked.node = &child.value();
    } else {
      picked.node = &container[picked.index];
    }
  }
  return picked;
}

// Byte edits leave few JSON documents well-formed (about 2% of tokenizer.json inputs parse), so half of them get
// 1-3 of their values replaced, removed or repeated instead: that reaches the checks behind the JSON syntax and
// the code that runs on a tokenizer that passed them.
std::string mutate_json_values(OrderedJson root, std::mt19937_64& rng) {
  static const OrderedJson kValues = OrderedJson::parse(R"json([null, true, false, 0, -1, 14, 15, 16, 17, 300,
      2097152, 1e308, "", "a", "ab", "a b", "\u0120 a", "<|endoftext|>", "<unk>", "\\s*", "(", "\\K", "(?=a)",
      "\\p{L}*", "a|", "\\C", "NFC", "NFKD", "Sequence", "Split", "Digits", "ByteLevel", "TemplateProcessing",
      "Removed", "Contiguous", "MergedWithPrevious", "MergedWithNext", "A", "B", "\u0301", "\u00e9", [], {},
      ["a", "b"], {"type": "NFD"}, {"SpecialToken": {"id": "<|endoftext|>"}}, {"Sequence": {"id": "A"}}])json");
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits; ++e) {
    const PickedNode picked = pick_node(root, rng);
    if (picked.parent == nullptr) break;
    switch (rng() % 4) {
      case 0:
        if (picked.parent->is_object()) {
          picked.parent->erase(picked.key);
        } else {
          picked.parent->erase(picked.index);
        }
        break;
      case 1:
        if (picked.parent->is_array()) {
          OrderedJson copy = *picked.node;  // push_back may move the elements
          picked.parent->push_back(std::move(copy));
        }
        break;
      default:
        *picked.node = kValues[rng() % kValues.size()];
        break;
    }
  }
  return root.dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  parse_one(data, size);
  return 0;
}

#ifndef KVFORGE_LIBFUZZER
int main(int argc, char** argv) {
  long iterations = 200000;
  uint64_t seed = 1;
  std::vector<std::string> config_files;
  CLI::App app{"Mutation fuzzer over kvforge's parsers (safetensors, config.json, tokenizer.json, encode/decode)"};
  app.add_option("--iterations", iterations, "mutated inputs to parse")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "random seed of the mutations");
  app.add_option("configs", config_files, "config.json files to start the config mutations from")
      ->check(CLI::ExistingFile);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : 2;  // --help prints and succeeds; bad arguments are bad input
  }
  std::vector<std::string> config_seeds;
  for (const std::string& path : config_files) {
    try {
      config_seeds.push_back(kvforge::read_text_file(path));
    } catch (const kvforge::InputError& error) {
      std::fprintf(stderr, "error: %s\n", error.what());
      return 2;
    }
  }
  if (config_seeds.empty())
    config_seeds.push_back(R"({"model_type":"llama","vocab_size":8,"hidden_size":8,)"
                           R"("intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2})");
  // clang-format off
  const Dictionary json_words = {"0", "-1", "18446744073709551615", "9223372036854775807", "1e308", "null", "[]",
                                 "{}", "\"\"", "true", "\"F64\"", "\"BOOL\"", ",", ":", "\"", "[0,0]", "4294967296"};
  Dictionary tokenizer_words = json_words;
  tokenizer_words.insert(tokenizer_words.end(), {"2097152", "\"Sequence\"", "\"NFD\"", "\"NFKC\"", "\"ByteLevel\"",
                         "\"Split\"", "\"Digits\"", "\"Removed\"", "\"Contiguous\"", "\"MergedWithPrevious\"", "\"(\"",
                         "\"\\\\s*\"", "\"\\\\K\"", "\"\\\\C\"", "\"\\u0301\"", "\"\\u00e9\"", "\"a b\"",
                         "[\"a\",\"b\"]", "{\"type\":\"NFC\"}"});
  // Chars that normalize, invalid UTF-8 (cut, stray, surrogate, overlong), added-token text, whitespace, NUL.
  const Dictionary text_words = {"\u00e9", "e\u0301", "\u212b", "\ufb01", "\U0001F600", "\xf0\x9f", "\xff",
                                 "\xed\xa0\x80", "\xc0\xaf", "<|endoftext|>", "<|im_start|>", "qq", " ", "\n", "\r\n",
                                 "\u00a0", "'s", "123", "the", std::string(1, '\0')};
  // clang-format on
  const std::vector<std::string> safetensors_seeds = {small_safetensors()};
  const std::vector<std::string> tokenizer_seeds = {small_tokenizer_json()};
  const OrderedJson tokenizer_seed_json = OrderedJson::parse(tokenizer_seeds[0]);
  const std::vector<std::string> text_seeds = {
      "Hello world, it's the 2024 winter!", "caf\u00e9 cafe\u0301 \u212b\ufb01 \U0001F600\u6771\u4eac\n\n\t x",
      " <|im_start|>user\nhi qq<|endoftext|>", "bad \xff\xfe utf8 \xed\xa0\x80 \xf4\x90\x80\x80"};
  std::mt19937_64 rng(seed);
  for (long i = 0; i < iterations; ++i) {
    const auto target = static_cast<uint8_t>(i % 4);
    const std::vector<std::string>& seeds = target == kSafetensors     ? safetensors_seeds
                                            : target == kConfig        ? config_seeds
                                            : target == kTokenizerJson ? tokenizer_seeds
                                                                       : text_seeds;
    const Dictionary& words = target == kEncode ? text_words : target == kTokenizerJson ? tokenizer_words : json_words;
    const uint8_t selector = target == kEncode && rng() % 2 == 0 ? target | kNfcBit : target;
    const std::string& start = seeds[rng() % seeds.size()];
    const bool by_value = target == kTokenizerJson && rng() % 2 == 0;
    std::string input = std::string(1, static_cast<char>(selector)) +
                        (by_value ? mutate_json_values(tokenizer_seed_json, rng) : mutate(start, seeds, words, rng));
    parse_one(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  std::printf(
      "fuzz_parsers: %ld mutated inputs parsed (seed %llu), no crash; accepted: %ld safetensors, %ld config.json, "
      "%ld tokenizer.json, %ld texts (%ld round trips compared)\n",
      iterations, static_cast<unsigned long long>(seed), accepted[kSafetensors], accepted[kConfig],
      accepted[kTokenizerJson], accepted[kEncode], round_trips_compared);
  return 0;
}
#endif
