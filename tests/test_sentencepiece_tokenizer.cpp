// SentencePiece-style tokenizer.json files (Llama 2, Mistral v0.x) against Hugging Face `tokenizers`: the fixtures
// of scripts/make_tokenizer_fixtures.py must encode and decode exactly, and the hand-made variants below pin what
// tokenizers 0.23.3 gives for each defining behaviour (byte fallback, Metaspace's prepend schemes, the Strip
// decoder, Replace and Strip normalizers, unk fusing).
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/tokenizer.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

using Json = nlohmann::json;
using Ids = std::vector<int64_t>;
using Tokens = std::vector<std::string>;
using testing::fixture;
using testing::read_file;


Json fixture_json(const std::string& folder) { return Json::parse(read_file(fixture(folder + "/tokenizer.json"))); }

Tokenizer from_json(const Json& root) { return Tokenizer::from_json_text(root.dump(), "sp.json"); }

Tokens tokens_of(const Tokenizer& tokenizer, const std::string& text, bool add_special_tokens = false) {
  Tokens tokens;
  for (const int64_t id : tokenizer.encode(text, add_special_tokens)) {
    tokens.push_back(tokenizer.id_to_token(id).value_or("<none>"));
  }
  return tokens;
}

std::string shown(const std::string& text) { return Json(text).dump(); }

// ---- Against the Hugging Face fixtures ---------------------------------------------------------------------

class SentencePieceFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(SentencePieceFixture, EncodesAndDecodesEveryTextLikeHuggingFace) {
  const Tokenizer tokenizer = Tokenizer::from_file(fixture(GetParam() + "/tokenizer.json"));
  const Json cases = Json::parse(read_file(fixture(GetParam() + "/encodings.json")));
  ASSERT_GE(cases.size(), 400u);
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string text = cases[i].at("text").get<std::string>();
    const Ids want = cases[i].at("ids").get<Ids>();
    const Ids ids = tokenizer.encode(text);
    ASSERT_EQ(ids, want) << "case " << i << ", text " << shown(text) << "\n got " << Json(ids).dump() << "\nwant "
                         << Json(want).dump();
    ASSERT_EQ(tokenizer.decode(want), cases[i].at("decoded").get<std::string>()) << "case " << i << " " << shown(text);
  }
}

INSTANTIATE_TEST_SUITE_P(HuggingFace, SentencePieceFixture, ::testing::Values("tokenizer-llama2", "tokenizer-mistral"));

TEST(SentencePiece, EncodesALargeTextQuicklyAndDecodesItBack) {
  // Llama 2 has no pre-tokenizer, so all of it is one piece for BPE: the merge loop must not be quadratic.
  const Tokenizer tokenizer = Tokenizer::from_file(fixture("tokenizer-llama2/tokenizer.json"));
  std::vector<std::string> texts;
  for (const Json& entry : Json::parse(read_file(fixture("tokenizer-llama2/encodings.json")))) {
    const std::string text = entry.at("text").get<std::string>();
    // Added-token text gets a "▁" prepended after it and a typed "▁" decodes as a space: neither round-trips.
    if (text.find('<') == std::string::npos && text.find("\u2581") == std::string::npos) texts.push_back(text);
  }
  std::string text;
  std::mt19937 random(5);
  while (text.size() < (1u << 20)) text += texts[random() % texts.size()];
  const auto start = std::chrono::steady_clock::now();
  const Ids ids = tokenizer.encode(text, /*add_special_tokens=*/false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(tokenizer.decode(ids), text);
  EXPECT_LT(seconds, 10.0);  // generous for sanitizer builds; a quadratic merge takes minutes
  std::cout << "[ info ] encoded " << text.size() << " bytes into " << ids.size() << " ids in " << seconds << " s\n";
}

// ---- Byte fallback -------------------------------------------------------------------------------------------

TEST(SentencePiece, ByteFallbackSpellsACharOutsideTheVocabAsItsUtf8Bytes) {
  const Tokenizer tokenizer = from_json(fixture_json("tokenizer-llama2"));
  ASSERT_EQ(tokenizer.token_to_id("\u6771"), std::nullopt);
  EXPECT_EQ(tokens_of(tokenizer, "\u6771", true), (Tokens{"<s>", "\u2581", "<0xE6>", "<0x9D>", "<0xB1>"}));
  const Ids ids = tokenizer.encode("\u6771");
  EXPECT_EQ(ids, (Ids{1, 372, 233, 160, 180}));  // <0xXX> is id 3 + XX, as in Llama 2
  EXPECT_EQ(tokenizer.decode(ids), "<s> \u6771");
  EXPECT_EQ(tokenizer.decode(ids, /*skip_special_tokens=*/true), "\u6771");
  // Cut inside the char, each part keeps its bytes (HF would show U+FFFD), so the parts join to the char.
  EXPECT_EQ(tokenizer.decode({233, 160}) + tokenizer.decode({180}), "\u6771");
  EXPECT_EQ(tokenizer.decode({233, 160}), "\xe6\x9d");
}

TEST(SentencePiece, ByteFallbackNeedsEveryByteTokenElseUsesUnk) {
  Json root = fixture_json("tokenizer-llama2");
  root["model"]["vocab"].erase("<0xB1>");
  const Tokenizer tokenizer = from_json(root);
  EXPECT_EQ(tokens_of(tokenizer, "\u6771a\u6771"), (Tokens{"\u2581", "<unk>", "a", "<unk>"}));
}

TEST(SentencePiece, WithoutByteFallbackUnknownCharsFuseIntoOneUnkOrNot) {
  Json root = fixture_json("tokenizer-llama2");
  root["model"]["byte_fallback"] = false;
  const Tokenizer fused = from_json(root);
  EXPECT_EQ(fused.encode("\u6771\u4eac x", false), (Ids{372, 0, 372, 346}));
  EXPECT_EQ(fused.decode(fused.encode("\u6771\u4eac x")), "<s> <unk> x");
  root["model"]["fuse_unk"] = false;
  const Tokenizer separate = from_json(root);
  EXPECT_EQ(separate.encode("\u6771\u4eac x", false), (Ids{372, 0, 0, 372, 346}));
  EXPECT_EQ(separate.decode(separate.encode("\u6771\u4eac x")), "<s> <unk><unk> x");
}

// ---- Llama 2: Prepend + Replace normalizer, Strip decoder ----------------------------------------------------

TEST(SentencePiece, Llama2PrependsTheMetaspaceToEachTextBetweenAddedTokens) {
  const Tokenizer tokenizer = from_json(fixture_json("tokenizer-llama2"));
  EXPECT_EQ(tokens_of(tokenizer, "a<s>b</s>", true), (Tokens{"<s>", "\u2581a", "<s>", "\u2581b", "</s>"}));
  EXPECT_EQ(tokens_of(tokenizer, "<s>", true), (Tokens{"<s>", "<s>"}));
  EXPECT_EQ(tokenizer.encode("", true), Ids{1});  // nothing is prepended to an empty text
  EXPECT_EQ(tokenizer.encode("", false), Ids{});
}

TEST(SentencePiece, StripDecoderRemovesOneLeadingSpace) {
  const Tokenizer tokenizer = from_json(fixture_json("tokenizer-llama2"));
  const Ids ids = tokenizer.encode(" leading", false);
  EXPECT_EQ(ids, (Ids{374, 398, 646, 405}));  // "▁▁" first: the prepended and the typed space
  EXPECT_EQ(tokenizer.decode(ids), " leading");
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("  two"), /*skip_special_tokens=*/true), "  two");
  // After "<s>" the first char is no space, so nothing is stripped.
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("hi")), "<s> hi");
}

TEST(SentencePiece, ReplaceNormalizerTakesARegexAndStripNormalizerTrimsEachText) {
  Json root = fixture_json("tokenizer-llama2");
  root["normalizer"] = {{"type", "Sequence"},
                        {"normalizers",
                         {{{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", "\u2581"}},
                          {{"type", "Prepend"}, {"prepend", "\u2581"}}}}};
  EXPECT_EQ(tokens_of(from_json(root), "a   b  c"), (Tokens{"\u2581a", "\u2581b", "\u2581c"}));

  root["normalizer"] = {{"type", "Sequence"},
                        {"normalizers",
                         {{{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                          {{"type", "Prepend"}, {"prepend", "\u2581"}},
                          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}};
  const Tokenizer stripped = from_json(root);
  EXPECT_EQ(tokens_of(stripped, " \t a b \n"), (Tokens{"\u2581a", "\u2581b"}));
  EXPECT_EQ(tokens_of(stripped, "  <s>  x "), (Tokens{"<s>", "\u2581", "x"}));
}

TEST(SentencePiece, NoDecoderJoinsTheTokensWithSpaces) {
  Json root = fixture_json("tokenizer-llama2");
  root["decoder"] = nullptr;
  const Tokenizer tokenizer = from_json(root);
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("hi there")), "<s> \u2581 hi \u2581the re");
}

// ---- Mistral: Metaspace pre-tokenizer and decoder ------------------------------------------------------------

Json with_metaspace(const std::string& scheme, bool split) {
  Json root = fixture_json("tokenizer-mistral");
  root["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", scheme}, {"split", split}};
  return root;
}

TEST(SentencePiece, MetaspacePrependsPerSchemeAndSplitsBeforeEachMetaspace) {
  const std::string text = "hi  there<s>x y";
  const std::vector<std::tuple<std::string, bool, Tokens>> cases = {
      {"first", true, {"\u2581", "hi", "\u2581", "\u2581the", "re", "<s>", "x", "\u2581", "y"}},
      {"first", false, {"\u2581", "hi", "\u2581\u2581", "the", "re", "<s>", "x", "\u2581", "y"}},
      {"always", true, {"\u2581", "hi", "\u2581", "\u2581the", "re", "<s>", "\u2581", "x", "\u2581", "y"}},
      {"always", false, {"\u2581", "hi", "\u2581\u2581", "the", "re", "<s>", "\u2581", "x", "\u2581", "y"}},
      {"never", true, {"hi", "\u2581", "\u2581the", "re", "<s>", "x", "\u2581", "y"}},
      {"never", false, {"hi", "\u2581\u2581", "the", "re", "<s>", "x", "\u2581", "y"}},
  };
  for (const auto& [scheme, split, expected] : cases) {
    const Tokenizer tokenizer = from_json(with_metaspace(scheme, split));
    EXPECT_EQ(tokens_of(tokenizer, text), expected) << scheme << " split " << split;
    // A text that starts with a space gets no second one.
    EXPECT_EQ(tokens_of(tokenizer, " lead"), (Tokens{"\u2581", "le", "ad"})) << scheme << " split " << split;
  }
}

TEST(SentencePiece, MetaspaceReadsTheOlderAddPrefixSpaceField) {
  Json root = fixture_json("tokenizer-mistral");
  root["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"add_prefix_space", true}};
  EXPECT_EQ(tokens_of(from_json(root), "a<s>b"), (Tokens{"\u2581a", "<s>", "\u2581b"}));  // "always"
  root["pre_tokenizer"]["add_prefix_space"] = false;
  root["pre_tokenizer"]["prepend_scheme"] = "never";
  EXPECT_EQ(tokens_of(from_json(root), "a<s>b"), (Tokens{"a", "<s>", "b"}));
}

TEST(SentencePiece, MetaspaceDecoderDropsTheFirstTokensMetaspaceUnlessTheSchemeIsNever) {
  const Ids ids = {372, 430, 404, 383};  // "▁", "hi", "▁the", "re"
  for (const std::string scheme : {"first", "always", "never"}) {
    Json root = fixture_json("tokenizer-mistral");
    root["decoder"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", scheme}};
    const Tokenizer tokenizer = from_json(root);
    ASSERT_EQ(tokenizer.encode("hi there", false), ids);
    EXPECT_EQ(tokenizer.decode(ids), scheme == "never" ? " hi there" : "hi there") << scheme;
    EXPECT_EQ(tokenizer.decode({1, 372, 430, 404, 383}), "<s> hi there") << scheme;
  }
}

TEST(SentencePiece, MistralControlTokensAreSpecialAndTheTemplateAddsBos) {
  const Tokenizer tokenizer = from_json(fixture_json("tokenizer-mistral"));
  EXPECT_EQ(tokenizer.encode("[INST] hi [/INST]"), (Ids{1, 859, 372, 430, 372, 860}));
  EXPECT_TRUE(tokenizer.is_special(859));
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("[INST] hi [/INST]"), /*skip_special_tokens=*/true), "hi ");
  EXPECT_EQ(tokens_of(tokenizer, "a<s>b", true), (Tokens{"<s>", "\u2581a", "<s>", "b"}));
}

// ---- Bad input ---------------------------------------------------------------------------------------------

TEST(SentencePieceBadJson, UnsupportedOrMalformedStepsNameTheField) {
  Json unigram = fixture_json("tokenizer-llama2");
  unigram["model"]["type"] = "Unigram";
  EXPECT_INPUT_ERROR(from_json(unigram), "sp.json", "model.type", "Unigram", "BPE");

  Json lowercase = fixture_json("tokenizer-llama2");
  lowercase["normalizer"]["normalizers"][1] = {{"type", "Lowercase"}};
  EXPECT_INPUT_ERROR(from_json(lowercase), "normalizer.normalizers[1].type", "Lowercase", "Prepend");

  Json empty_pattern = fixture_json("tokenizer-llama2");
  empty_pattern["normalizer"]["normalizers"][1]["pattern"]["String"] = "";
  EXPECT_INPUT_ERROR(from_json(empty_pattern), "normalizer.normalizers[1].pattern.String", "empty");

  Json ctc = fixture_json("tokenizer-llama2");
  ctc["decoder"]["decoders"][2] = {{"type", "CTC"}};
  EXPECT_INPUT_ERROR(from_json(ctc), "decoder.decoders[2].type", "CTC", "ByteFallback");

  Json wide_strip = fixture_json("tokenizer-llama2");
  wide_strip["decoder"]["decoders"][3]["content"] = "  ";
  EXPECT_INPUT_ERROR(from_json(wide_strip), "decoder.decoders[3].content", "one char");

  Json negative_strip = fixture_json("tokenizer-llama2");
  negative_strip["decoder"]["decoders"][3]["start"] = -1;
  EXPECT_INPUT_ERROR(from_json(negative_strip), "decoder.decoders[3].start", "non-negative");

  Json wide_replacement = fixture_json("tokenizer-mistral");
  wide_replacement["pre_tokenizer"]["replacement"] = "ab";
  EXPECT_INPUT_ERROR(from_json(wide_replacement), "pre_tokenizer.replacement", "one char");

  Json scheme = fixture_json("tokenizer-mistral");
  scheme["decoder"]["prepend_scheme"] = "sometimes";
  EXPECT_INPUT_ERROR(from_json(scheme), "decoder.prepend_scheme", "sometimes", "first");

  // As in HF: add_prefix_space false says "never", which an absent prepend_scheme ("always") contradicts.
  Json contradiction = fixture_json("tokenizer-mistral");
  contradiction["pre_tokenizer"].erase("prepend_scheme");
  contradiction["pre_tokenizer"]["add_prefix_space"] = false;
  EXPECT_INPUT_ERROR(from_json(contradiction), "pre_tokenizer.add_prefix_space", "prepend_scheme");
}

}  // namespace
}  // namespace kvforge
