// Synthetic task generators: determinism, length fitting, needle placement, answer correctness and scoring.
// Prompts are parsed back independently (regexes, a JSON parser, an expression evaluator) rather than
// trusting the generator's own bookkeeping.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "eval/tasks/rng.h"
#include "eval/tasks/task.h"
#include "eval/tasks/word_lists.h"

namespace kvforge::tasks {
namespace {

int64_t byte_tokens(const std::string& text) { return static_cast<int64_t>(text.size()); }

// Words and punctuation marks, a coarse stand-in for a subword tokenizer.
int64_t coarse_tokens(const std::string& text) {
  int64_t tokens = 0;
  bool in_word = false;
  for (unsigned char c : text) {
    if (std::isalnum(c)) {
      if (!in_word) ++tokens;
      in_word = true;
    } else {
      in_word = false;
      if (!std::isspace(c)) ++tokens;
    }
  }
  return tokens;
}

const TokenCounter kBytes = byte_tokens;
const TokenCounter kCoarse = coarse_tokens;

// The noise haystack as the passkey and RULER definitions give it.
const std::vector<std::string> kNoise = {"The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                                         "There and back again."};
const std::string kUuidPattern = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}";

int64_t count_noise(const std::string& text) {
  int64_t total = 0;
  for (const auto& sentence : kNoise)
    for (size_t at = text.find(sentence); at != std::string::npos; at = text.find(sentence, at + 1)) ++total;
  return total;
}

std::vector<Sample> make(const std::string& task, int64_t target_tokens, const TokenCounter& counter, int64_t count = 5,
                         uint64_t seed = 42) {
  TaskSpec spec;
  spec.task = task;
  spec.target_tokens = target_tokens;
  spec.seed = seed;
  spec.count = count;
  return generate(spec, counter);
}

std::vector<std::smatch> all_matches(const std::string& text, const std::regex& pattern) {
  std::vector<std::smatch> matches;
  for (std::sregex_iterator it(text.begin(), text.end(), pattern), end; it != end; ++it) matches.push_back(*it);
  return matches;
}
// Matches point into the text, so a temporary would leave them dangling.
std::vector<std::smatch> all_matches(std::string&& text, const std::regex& pattern) = delete;

// Noise sentences before `position` / all of them, the depth a reader of the prompt would measure.
void expect_depth_at(const Sample& sample, size_t position) {
  ASSERT_NE(position, std::string::npos);
  const int64_t total = count_noise(sample.prompt);
  ASSERT_GT(total, 0);
  const int64_t before = count_noise(sample.prompt.substr(0, position));
  EXPECT_LE(std::abs(static_cast<double>(before) / total - sample.depth), 0.5 / total + 1e-9)
      << "needle after " << before << " of " << total << " sentences, depth " << sample.depth;
}

// --- task table and errors ---

TEST(TaskNames, ListsEveryTaskOnce) {
  const std::vector<std::string> expected = {"passkey",         "niah_single",       "niah_multikey", "niah_multivalue",
                                             "niah_multiquery", "variable_tracking", "kv_retrieval",  "arithmetic"};
  EXPECT_EQ(task_names(), expected);
}

TEST(TaskErrors, UnknownTaskListsValidNames) {
  try {
    make("niah_singel", 1000, kBytes);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("niah_singel"), std::string::npos) << message;
    for (const auto& name : task_names()) EXPECT_NE(message.find(name), std::string::npos) << message;
  }
}

TEST(TaskErrors, TooSmallTargetStatesTheExactMinimum) {
  int64_t minimum = 0;
  try {
    make("passkey", 100, kBytes);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& error) {
    std::smatch match;
    const std::string message = error.what();
    ASSERT_TRUE(std::regex_search(message, match, std::regex("minimum of (\\d+) tokens"))) << message;
    minimum = std::stoll(match[1]);
  }
  ASSERT_GT(minimum, 100);
  // The passkey prompt's byte length does not depend on the drawn number, so the minimum is exact for any seed.
  const Sample at_minimum = make("passkey", minimum, kBytes, 1)[0];
  EXPECT_EQ(at_minimum.prompt_tokens, minimum);
  EXPECT_EQ(count_noise(at_minimum.prompt), 0);
  EXPECT_THROW(make("passkey", minimum - 1, kBytes), std::invalid_argument);
  // A budget that exactly fits one noise sentence (and its line break) is used in full.
  const int64_t one_sentence = minimum + static_cast<int64_t>(kNoise[0].size()) + 1;
  const Sample exact = make("passkey", one_sentence, kBytes, 1)[0];
  EXPECT_EQ(exact.prompt_tokens, one_sentence);
  EXPECT_EQ(count_noise(exact.prompt), 1);
}

TEST(TaskErrors, EveryHaystackTaskRejectsATinyTarget) {
  for (const auto& name : task_names()) {
    if (name == "arithmetic") continue;  // pads only when there is room; covered below
    try {
      make(name, 20, kCoarse);
      ADD_FAILURE() << name << ": expected std::invalid_argument";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find("minimum of"), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find(name), std::string::npos) << error.what();
    }
  }
}

TEST(TaskErrors, GrowToMinimumGivesTheMinimalPromptInstead) {
  for (const auto& name : task_names()) {
    TaskSpec spec;
    spec.task = name;
    spec.target_tokens = 20;
    spec.seed = 5;
    spec.grow_to_minimum = true;
    const Sample sample = generate(spec, kCoarse).front();
    EXPECT_GT(sample.prompt_tokens, 20) << name;
    EXPECT_EQ(score(sample, sample.target), 1.0) << name;
    if (name != "arithmetic") EXPECT_EQ(count_noise(sample.prompt), 0) << name;
  }
}

TEST(TaskErrors, KnobsOutOfRangeThrow) {
  auto spec_with = [](auto change) {
    TaskSpec spec{"passkey", 1000, 42, 1};
    change(spec);
    return spec;
  };
  const std::vector<TaskSpec> bad = {
      spec_with([](TaskSpec& s) { s.depth = 1.5; }),        spec_with([](TaskSpec& s) { s.depth = -0.5; }),
      spec_with([](TaskSpec& s) { s.passkey_digits = 0; }), spec_with([](TaskSpec& s) { s.passkey_digits = 19; }),
      spec_with([](TaskSpec& s) { s.num_needles = 0; }),    spec_with([](TaskSpec& s) { s.num_values = 0; }),
      spec_with([](TaskSpec& s) { s.num_queries = 0; }),    spec_with([](TaskSpec& s) { s.num_chains = 0; }),
      spec_with([](TaskSpec& s) { s.num_hops = -1; }),      spec_with([](TaskSpec& s) { s.arithmetic_steps = 0; }),
      spec_with([](TaskSpec& s) { s.count = -1; }),         spec_with([](TaskSpec& s) { s.target_tokens = -1; }),
  };
  for (const auto& spec : bad) EXPECT_THROW(generate(spec, kBytes), std::invalid_argument);
  EXPECT_THROW(generate(TaskSpec{"passkey", 1000, 42, 1}, TokenCounter()), std::invalid_argument);
  EXPECT_TRUE(generate(TaskSpec{"passkey", 1000, 42, 0}, kBytes).empty());
}

// --- determinism ---

// The most a single haystack unit can add, i.e. how far below the target a maximal haystack may stop.
int64_t unit_tokens(const std::string& task, const TokenCounter& counter) {
  if (task == "kv_retrieval") {
    const std::string uuid = "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";
    return counter(", \"" + uuid + "\": \"" + uuid + "\"");
  }
  int64_t widest = 0;
  for (const auto& sentence : kNoise) widest = std::max(widest, counter(" " + sentence));
  return widest;
}

class EveryTask : public ::testing::TestWithParam<std::string> {};

void expect_same(const Sample& a, const Sample& b) {
  EXPECT_EQ(a.task, b.task);
  EXPECT_EQ(a.prompt, b.prompt);
  EXPECT_EQ(a.target, b.target);
  EXPECT_EQ(a.answers, b.answers);
  EXPECT_EQ(a.rule, b.rule);
  EXPECT_EQ(a.depth, b.depth);
  EXPECT_EQ(a.prompt_tokens, b.prompt_tokens);
}

TEST_P(EveryTask, SameSpecGivesIdenticalSamples) {
  const auto first = make(GetParam(), 2000, kBytes, 6, 7);
  const auto second = make(GetParam(), 2000, kBytes, 6, 7);
  ASSERT_EQ(first.size(), 6u);
  ASSERT_EQ(second.size(), 6u);
  for (size_t i = 0; i < first.size(); ++i) expect_same(first[i], second[i]);
  // A sample depends on its index only, not on how many come before it in the batch.
  expect_same(make(GetParam(), 2000, kBytes, 1, 7)[0], first[0]);
}

TEST_P(EveryTask, SeedsAndIndicesGiveDifferentSamples) {
  const auto seed_7 = make(GetParam(), 2000, kBytes, 6, 7);
  const auto seed_8 = make(GetParam(), 2000, kBytes, 6, 8);
  for (size_t i = 0; i < seed_7.size(); ++i) {
    EXPECT_NE(seed_7[i].prompt, seed_8[i].prompt) << i;
    EXPECT_NE(seed_7[i].target, seed_8[i].target) << i;
  }
  std::set<std::string> prompts;
  for (const auto& sample : seed_7) prompts.insert(sample.prompt);
  EXPECT_EQ(prompts.size(), seed_7.size());
}

TEST_P(EveryTask, PromptsAndTargetsArePlainAscii) {
  for (const auto& sample : make(GetParam(), 3000, kBytes, 5)) {
    EXPECT_EQ(sample.task, GetParam());
    for (const std::string* text : {&sample.prompt, &sample.target})
      for (unsigned char c : *text) ASSERT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f)) << static_cast<int>(c);
  }
}

TEST_P(EveryTask, TargetScoresOneAndAnUnrelatedAnswerZero) {
  for (const auto* counter : {&kBytes, &kCoarse}) {
    for (const auto& sample : make(GetParam(), 3000, *counter, 10)) {
      EXPECT_FALSE(sample.answers.empty());
      EXPECT_DOUBLE_EQ(score(sample, sample.target), 1.0) << sample.target;
      EXPECT_DOUBLE_EQ(score(sample, "I am not sure."), 0.0);
      EXPECT_DOUBLE_EQ(score(sample, ""), 0.0);
    }
  }
}

TEST_P(EveryTask, CounterCallsGrowLogarithmically) {
  int64_t calls = 0;
  const TokenCounter counting = [&](const std::string& text) {
    ++calls;
    return coarse_tokens(text);
  };
  const int64_t samples = 20;
  make(GetParam(), 16384, counting, samples);
  // Units are capped at target + 1, so a bracketing search needs about 2 * log2(16385) + 3 calls at most;
  // a linear scan would need thousands.
  EXPECT_LE(calls, samples * 32);
}

TEST_P(EveryTask, HundredSamplesAt16kBytesTakeWellUnderASecond) {
  const auto start = std::chrono::steady_clock::now();
  const auto samples = make(GetParam(), 16384, kBytes, 100);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(samples.size(), 100u);
  EXPECT_LT(seconds, 1.0);
}

TEST_P(EveryTask, NonMonotoneCounterStillFits) {
  // Jitter of up to 6 tokens that depends on the text: the search may stop early but must never overshoot.
  const TokenCounter jittery = [](const std::string& text) {
    return static_cast<int64_t>(text.size()) + static_cast<int64_t>(std::hash<std::string>()(text) % 7);
  };
  for (const auto& sample : make(GetParam(), 4096, jittery, 10)) {
    EXPECT_EQ(sample.prompt_tokens, jittery(sample.prompt));
    EXPECT_LE(sample.prompt_tokens, 4096);
  }
}

TEST_P(EveryTask, BadlyEstimatedCounterStillComesWithinOneUnit) {
  // Monotone but four times denser past 2000 bytes, so the linear first guesses land far off and the search
  // has to gallop and bisect to reach the last unit that fits.
  const TokenCounter kinked = [](const std::string& text) {
    const int64_t bytes = static_cast<int64_t>(text.size());
    return bytes <= 2000 ? bytes : 2000 + 4 * (bytes - 2000);
  };
  const int64_t target = 16384;
  // A unit lies past the kink, where each of its bytes costs 4 tokens (+1 byte of separator).
  const int64_t slack = 4 * (unit_tokens(GetParam(), kBytes) + 1);
  for (const auto& sample : make(GetParam(), target, kinked, 10)) {
    EXPECT_EQ(sample.prompt_tokens, kinked(sample.prompt));
    EXPECT_LE(sample.prompt_tokens, target);
    EXPECT_GE(sample.prompt_tokens, target - slack);
  }
}

INSTANTIATE_TEST_SUITE_P(Tasks, EveryTask, ::testing::ValuesIn(task_names()),
                         [](const auto& info) { return info.param; });

TEST(Determinism, GoldenValuesPinThePlatformIndependentStream) {
  // Pinned on one platform; a different standard library or compiler must reproduce them bit for bit.
  EXPECT_EQ(sample_seed("passkey", 1000, 42, 0), 5942564208238514422ULL);
  Rng rng(12345);
  std::vector<int64_t> draws;
  for (int i = 0; i < 5; ++i) draws.push_back(rng.uniform_int(0, 99));
  EXPECT_EQ(draws, (std::vector<int64_t>{46, 21, 85, 54, 96}));
  EXPECT_EQ(random_uuid4(rng), "352b34d4-8f6c-43c5-8756-704bea85be38");
  EXPECT_EQ(make("passkey", 1000, kBytes, 1)[0].answers[0], "81996");
  EXPECT_EQ(make("niah_single", 1000, kBytes, 1)[0].answers[0], "6279307");
}

// --- random helpers ---

TEST(Rng, UniformIntStaysInRangeAndIsUnbiased) {
  Rng rng(1);
  std::vector<int64_t> buckets(10, 0);
  const int64_t draws = 100000;
  for (int64_t i = 0; i < draws; ++i) {
    const int64_t value = rng.uniform_int(0, 9);
    ASSERT_GE(value, 0);
    ASSERT_LE(value, 9);
    ++buckets[value];
  }
  for (int64_t bucket : buckets) EXPECT_NEAR(bucket, draws / 10, draws / 10 * 0.05);
  for (int i = 0; i < 1000; ++i) {
    const int64_t value = rng.uniform_int(-3, 3);
    ASSERT_GE(value, -3);
    ASSERT_LE(value, 3);
  }
  EXPECT_EQ(rng.uniform_int(5, 5), 5);
  rng.uniform_int(INT64_MIN, INT64_MAX);  // the full range must not divide by zero
}

TEST(Rng, Uuid4HasVersionAndVariantBits) {
  Rng rng(2);
  const std::regex pattern(kUuidPattern);
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string uuid = random_uuid4(rng);
    EXPECT_TRUE(std::regex_match(uuid, pattern)) << uuid;
    seen.insert(uuid);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(Rng, RandomNumberHasExactlyTheDigits) {
  Rng rng(3);
  for (int64_t digits : {1, 5, 7, 18}) {
    for (int i = 0; i < 200; ++i) {
      const std::string number = random_number(rng, digits);
      EXPECT_EQ(static_cast<int64_t>(number.size()), digits) << number;
      if (digits > 1) {
        EXPECT_NE(number[0], '0') << number;
      }
    }
  }
}

TEST(WordLists, AreLargeDistinctAndLowercase) {
  for (const auto* words : {&adjectives(), &nouns()}) {
    EXPECT_GE(words->size(), 150u);
    EXPECT_EQ(std::set<std::string>(words->begin(), words->end()).size(), words->size());
    for (const auto& word : *words) EXPECT_TRUE(std::regex_match(word, std::regex("[a-z]+"))) << word;
  }
}

// --- lengths ---

struct LengthCase {
  std::string task;
  int64_t target_tokens;
  bool coarse;  // else bytes
};

void PrintTo(const LengthCase& param, std::ostream* out) {
  *out << param.task << " at " << param.target_tokens << (param.coarse ? " coarse" : " byte") << " tokens";
}

class PromptLength : public ::testing::TestWithParam<LengthCase> {};

TEST_P(PromptLength, FitsTheBudgetAndComesClose) {
  const LengthCase& param = GetParam();
  const TokenCounter& counter = param.coarse ? kCoarse : kBytes;
  const int64_t slack = std::max<int64_t>(std::ceil(0.05 * param.target_tokens), unit_tokens(param.task, counter));
  for (const auto& sample : make(param.task, param.target_tokens, counter, 8)) {
    EXPECT_EQ(sample.prompt_tokens, counter(sample.prompt));
    EXPECT_LE(sample.prompt_tokens, param.target_tokens);
    EXPECT_GE(sample.prompt_tokens, param.target_tokens - slack);
    if (param.target_tokens >= 1000) {
      const bool has_pairs = sample.prompt.find("\", \"") != std::string::npos;
      EXPECT_TRUE(count_noise(sample.prompt) > 0 || has_pairs) << "the haystack should not be empty at this length";
    }
  }
}

std::vector<LengthCase> length_cases() {
  std::vector<LengthCase> cases;
  for (const auto& task : task_names()) {
    for (int64_t length : {256, 1000, 4096, 16384}) cases.push_back({task, length, /*coarse=*/true});
    for (int64_t length : {1000, 4096, 16384}) cases.push_back({task, length, /*coarse=*/false});
  }
  // Bytes at 256 leave room only for the shortest templates; the others throw (TaskErrors).
  cases.push_back({"passkey", 256, false});
  cases.push_back({"arithmetic", 256, false});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Tasks, PromptLength, ::testing::ValuesIn(length_cases()), [](const auto& info) {
  return info.param.task + "_" + std::to_string(info.param.target_tokens) + (info.param.coarse ? "_coarse" : "_bytes");
});

// --- passkey ---

TEST(Passkey, NeedleHoldsTheAnswerAtTheDepth) {
  for (const auto& sample : make("passkey", 4096, kBytes, 20)) {
    std::smatch match;
    ASSERT_TRUE(std::regex_search(sample.prompt, match,
                                  std::regex("The pass key is (\\d+)\\. Remember it\\. (\\d+) is the pass key\\.")));
    EXPECT_EQ(match[1], match[2]);
    EXPECT_EQ(sample.answers, std::vector<std::string>{match[1]});
    EXPECT_TRUE(std::regex_match(sample.answers[0], std::regex("[1-9][0-9]{4}")));
    EXPECT_EQ(sample.target, " " + sample.answers[0] + ".");
    EXPECT_EQ(sample.rule, ScoringRule::kAllContained);
    EXPECT_EQ(sample.prompt.find("There is an important info hidden inside a lot of irrelevant text."), 0u);
    const std::string question = "What is the pass key? The pass key is";
    EXPECT_EQ(sample.prompt.substr(sample.prompt.size() - question.size()), question);
    expect_depth_at(sample, static_cast<size_t>(match.position(0)));
    EXPECT_DOUBLE_EQ(score(sample, " The pass key is 00000."), 0.0);
  }
}

TEST(Passkey, DigitsAreConfigurable) {
  TaskSpec spec{"passkey", 1000, 42, 10};
  spec.passkey_digits = 9;
  for (const auto& sample : generate(spec, kBytes))
    EXPECT_TRUE(std::regex_match(sample.answers[0], std::regex("[1-9][0-9]{8}")));
}

// --- depth ---

struct DepthCase {
  std::string task;
  double depth;
};

void PrintTo(const DepthCase& param, std::ostream* out) { *out << param.task << " at depth " << param.depth; }

class ExplicitDepth : public ::testing::TestWithParam<DepthCase> {};

// The prompt position of the needle that the sample's depth refers to.
size_t depth_needle_position(const Sample& sample) {
  if (sample.task == "passkey") return sample.prompt.find("The pass key is " + sample.answers[0]);
  // niah: the first queried key's needle (multivalue: whichever value's needle sits there, checked by caller).
  std::smatch question;
  EXPECT_TRUE(std::regex_search(sample.prompt, question,
                                std::regex("What are all the special magic (?:numbers|uuids) for ([a-z]+-[a-z]+)")));
  return sample.prompt.find("for " + std::string(question[1]) + " is: " + sample.answers[0] + ".");
}

TEST_P(ExplicitDepth, NeedleSitsAtTheRequestedDepth) {
  TaskSpec spec{GetParam().task, 4096, 42, 5};
  spec.depth = GetParam().depth;
  for (const auto& sample : generate(spec, kBytes)) {
    EXPECT_EQ(sample.depth, GetParam().depth);
    if (sample.task == "kv_retrieval") {
      const size_t begin = sample.prompt.find("JSON data:\n") + 11;
      const auto json =
          nlohmann::ordered_json::parse(sample.prompt.substr(begin, sample.prompt.find("\n\nKey:") - begin));
      std::smatch key;
      ASSERT_TRUE(std::regex_search(sample.prompt, key, std::regex("Key: \"(" + kUuidPattern + ")\"")));
      int64_t index = 0;
      for (auto it = json.begin(); it != json.end() && it.key() != key[1]; ++it) ++index;
      const int64_t pairs = static_cast<int64_t>(json.size());
      ASSERT_LT(index, pairs);
      EXPECT_LE(std::abs(static_cast<double>(index) / (pairs - 1) - sample.depth), 0.5 / (pairs - 1) + 1e-9);
    } else if (sample.task == "niah_multivalue") {
      // The needle at the depth is one of the values; the others sit at random places.
      bool found = false;
      const int64_t total = count_noise(sample.prompt);
      for (const auto& value : sample.answers) {
        const int64_t before = count_noise(sample.prompt.substr(0, sample.prompt.find("is: " + value + ".")));
        found = found || std::abs(static_cast<double>(before) / total - sample.depth) <= 0.5 / total + 1e-9;
      }
      EXPECT_TRUE(found);
    } else {
      expect_depth_at(sample, depth_needle_position(sample));
    }
  }
}

std::vector<DepthCase> depth_cases() {
  std::vector<DepthCase> cases;
  for (const char* task :
       {"passkey", "niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "kv_retrieval"})
    for (double depth : {0.0, 0.3, 0.5, 0.77, 1.0}) cases.push_back({task, depth});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Tasks, ExplicitDepth, ::testing::ValuesIn(depth_cases()), [](const auto& info) {
  return info.param.task + "_" + std::to_string(static_cast<int>(std::lround(info.param.depth * 100)));
});

TEST(RandomDepth, ComesFromTheFortyPointGridAndMatchesThePrompt) {
  const auto samples = make("niah_single", 2000, kBytes, 200);
  std::set<int64_t> grid_points;
  for (const auto& sample : samples) {
    ASSERT_GE(sample.depth, 0.0);
    ASSERT_LE(sample.depth, 1.0);
    const double scaled = sample.depth * 39;
    EXPECT_NEAR(scaled, std::round(scaled), 1e-9);
    grid_points.insert(std::lround(scaled));
    expect_depth_at(sample, depth_needle_position(sample));
  }
  EXPECT_GE(grid_points.size(), 30u);
}

TEST(RandomDepth, ExplicitDepthMovesTheNeedleButKeepsTheContent) {
  TaskSpec spec{"niah_multikey", 3000, 42, 5};
  const auto random_depth = generate(spec, kBytes);
  spec.depth = 0.25;
  const auto fixed_depth = generate(spec, kBytes);
  for (size_t i = 0; i < random_depth.size(); ++i) EXPECT_EQ(random_depth[i].answers, fixed_depth[i].answers);
}

// --- niah ---

struct ParsedNiah {
  std::vector<std::pair<std::string, std::string>> needles;  // key, value in prompt order
  std::vector<std::string> queried_keys;
};

ParsedNiah parse_niah(const Sample& sample, const std::string& kind, const std::string& value_pattern) {
  ParsedNiah parsed;
  const std::regex needle("One of the special magic " + kind + " for ([a-z]+-[a-z]+) is: (" + value_pattern + ")\\.");
  for (const auto& match : all_matches(sample.prompt, needle)) parsed.needles.emplace_back(match[1], match[2]);
  std::smatch question;
  EXPECT_TRUE(std::regex_search(sample.prompt, question,
                                std::regex("What are all the special magic " + kind +
                                           " for (.+) mentioned in the provided text\\? The special magic " + kind +
                                           " for (.+) mentioned in the provided text are$")));
  EXPECT_EQ(question[1], question[2]);
  const std::string query = question[1];
  for (const auto& match : all_matches(query, std::regex("[a-z]+-[a-z]+"))) parsed.queried_keys.push_back(match[0]);
  return parsed;
}

std::map<std::string, std::vector<std::string>> values_by_key(const ParsedNiah& parsed) {
  std::map<std::string, std::vector<std::string>> values;
  for (const auto& [key, value] : parsed.needles) values[key].push_back(value);
  return values;
}

TEST(Niah, SingleHasOneNeedleForTheQueriedKey) {
  for (const auto& sample : make("niah_single", 2000, kBytes, 20)) {
    const ParsedNiah parsed = parse_niah(sample, "numbers", "[0-9]+");
    ASSERT_EQ(parsed.needles.size(), 1u);
    EXPECT_EQ(parsed.queried_keys, std::vector<std::string>{parsed.needles[0].first});
    EXPECT_EQ(sample.answers, std::vector<std::string>{parsed.needles[0].second});
    EXPECT_TRUE(std::regex_match(sample.answers[0], std::regex("[1-9][0-9]{6}")));
    EXPECT_EQ(sample.target, " " + sample.answers[0] + ".");
  }
}

TEST(Niah, MultikeyQueriesOneOfDistinctKeys) {
  TaskSpec spec{"niah_multikey", 3000, 42, 20};
  for (int64_t needles : {4, 7}) {
    spec.num_needles = needles;
    for (const auto& sample : generate(spec, kBytes)) {
      const ParsedNiah parsed = parse_niah(sample, "numbers", "[0-9]+");
      ASSERT_EQ(static_cast<int64_t>(parsed.needles.size()), needles);
      const auto values = values_by_key(parsed);
      EXPECT_EQ(static_cast<int64_t>(values.size()), needles) << "keys must be distinct";
      ASSERT_EQ(parsed.queried_keys.size(), 1u);
      ASSERT_EQ(values.count(parsed.queried_keys[0]), 1u);
      EXPECT_EQ(sample.answers, values.at(parsed.queried_keys[0]));
      for (const auto& [key, other] : values) {
        if (key == parsed.queried_keys[0]) continue;
        EXPECT_NE(other[0], sample.answers[0]);
        EXPECT_DOUBLE_EQ(score(sample, " " + other[0] + "."), 0.0) << "a distractor's value must score 0";
      }
    }
  }
}

TEST(Niah, MultivalueAnswersEveryValueOfTheKeyInTextOrder) {
  for (const auto& sample : make("niah_multivalue", 3000, kBytes, 20)) {
    const ParsedNiah parsed = parse_niah(sample, "numbers", "[0-9]+");
    ASSERT_EQ(parsed.needles.size(), 4u);
    const auto values = values_by_key(parsed);
    ASSERT_EQ(values.size(), 1u);
    EXPECT_EQ(parsed.queried_keys, std::vector<std::string>{values.begin()->first});
    EXPECT_EQ(sample.answers, values.begin()->second);
    EXPECT_EQ(std::set<std::string>(sample.answers.begin(), sample.answers.end()).size(), 4u);
    // string_match_all gives partial credit.
    EXPECT_DOUBLE_EQ(score(sample, sample.answers[0] + " and " + sample.answers[2]), 0.5);
    EXPECT_DOUBLE_EQ(score(sample, sample.answers[3]), 0.25);
  }
}

TEST(Niah, MultiqueryAnswersEachKeyInQueryOrder) {
  for (const auto& sample : make("niah_multiquery", 3000, kBytes, 20)) {
    const ParsedNiah parsed = parse_niah(sample, "numbers", "[0-9]+");
    ASSERT_EQ(parsed.needles.size(), 4u);
    const auto values = values_by_key(parsed);
    ASSERT_EQ(parsed.queried_keys.size(), 4u);
    EXPECT_EQ(std::set<std::string>(parsed.queried_keys.begin(), parsed.queried_keys.end()).size(), 4u);
    std::vector<std::string> expected;
    for (const auto& key : parsed.queried_keys) {
      ASSERT_EQ(values.count(key), 1u) << key;
      expected.push_back(values.at(key)[0]);
    }
    EXPECT_EQ(sample.answers, expected);
  }
}

TEST(Niah, UuidValues) {
  for (const char* task : {"niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery"}) {
    TaskSpec spec{task, 3000, 42, 5};
    spec.needle_value = NeedleValue::kUuid;
    for (const auto& sample : generate(spec, kBytes)) {
      const ParsedNiah parsed = parse_niah(sample, "uuids", kUuidPattern);
      EXPECT_FALSE(parsed.needles.empty());
      for (const auto& answer : sample.answers) EXPECT_TRUE(std::regex_match(answer, std::regex(kUuidPattern)));
      EXPECT_EQ(sample.prompt.find("numbers"), std::string::npos);
    }
  }
}

// --- variable tracking ---

// Follows the assignments in prompt order; fails if a variable is read before it is assigned or assigned twice.
std::map<std::string, std::string> resolve_variables(const std::string& prompt) {
  std::map<std::string, std::string> values;
  const std::regex statement("VAR ([A-Z]{5}) = (?:([0-9]{5})|VAR ([A-Z]{5}))\\.");
  for (const auto& match : all_matches(prompt, statement)) {
    EXPECT_EQ(values.count(match[1]), 0u) << match[1] << " assigned twice";
    if (match[2].matched) {
      values[match[1]] = match[2];
    } else {
      EXPECT_EQ(values.count(match[3]), 1u) << match[3] << " read before it is assigned";
      values[match[1]] = values[match[3]];
    }
  }
  return values;
}

TEST(VariableTracking, AnswersAreExactlyTheVariablesHoldingTheValue) {
  struct Shape {
    int64_t chains, hops;
  };
  for (const Shape shape : {Shape{1, 4}, Shape{3, 2}, Shape{2, 0}}) {
    TaskSpec spec{"variable_tracking", 3000, 42, 15};
    spec.num_chains = shape.chains;
    spec.num_hops = shape.hops;
    for (const auto& sample : generate(spec, kBytes)) {
      const auto values = resolve_variables(sample.prompt);
      EXPECT_EQ(static_cast<int64_t>(values.size()), shape.chains * (shape.hops + 1));
      std::smatch question;
      ASSERT_TRUE(std::regex_search(sample.prompt, question, std::regex("assigned the value ([0-9]{5}) in the text")));
      std::set<std::string> expected;
      for (const auto& [name, value] : values)
        if (value == question[1]) expected.insert(name);
      EXPECT_EQ(std::set<std::string>(sample.answers.begin(), sample.answers.end()), expected);
      EXPECT_EQ(static_cast<int64_t>(sample.answers.size()), shape.hops + 1);
      EXPECT_EQ(sample.depth, -1);
      for (const auto& [name, value] : values)
        if (value != question[1]) {
          EXPECT_DOUBLE_EQ(score(sample, name), 0.0);
        }
    }
  }
}

// --- kv retrieval ---

TEST(KvRetrieval, AnswerIsTheQueriedKeysValueInTheJson) {
  for (const auto& sample : make("kv_retrieval", 6000, kBytes, 10)) {
    const size_t begin = sample.prompt.find("JSON data:\n");
    const size_t end = sample.prompt.find("\n\nKey:");
    ASSERT_NE(begin, std::string::npos);
    ASSERT_NE(end, std::string::npos);
    const std::string text = sample.prompt.substr(begin + 11, end - begin - 11);
    const auto json = nlohmann::ordered_json::parse(text);
    EXPECT_EQ(json.size(), all_matches(text, std::regex("\"(" + kUuidPattern + ")\": ")).size()) << "keys repeat";
    std::smatch key;
    ASSERT_TRUE(std::regex_search(sample.prompt, key, std::regex("Key: \"(" + kUuidPattern + ")\"\n")));
    ASSERT_TRUE(json.contains(key[1].str()));
    EXPECT_EQ(sample.answers, std::vector<std::string>{json[key[1].str()].get<std::string>()});
    EXPECT_DOUBLE_EQ(score(sample, " " + json.begin().value().get<std::string>() + "."),
                     json.begin().key() == key[1] ? 1.0 : 0.0);
    std::string upper = sample.target;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_DOUBLE_EQ(score(sample, upper), 1.0) << "matching ignores case";
  }
}

// --- arithmetic ---

// A recursive-descent evaluator with the usual precedence, independent of the generator's bracketing.
class Evaluator {
 public:
  explicit Evaluator(std::string text) : text_(std::move(text)) {}
  int64_t parse() {
    const int64_t value = sum();
    skip_spaces();
    EXPECT_EQ(at_, text_.size()) << "trailing text in " << text_;
    return value;
  }
  int64_t operations = 0;

 private:
  void skip_spaces() {
    while (at_ < text_.size() && text_[at_] == ' ') ++at_;
  }
  bool take(char c) {
    skip_spaces();
    if (at_ < text_.size() && text_[at_] == c) return ++at_, true;
    return false;
  }
  int64_t sum() {
    int64_t value = product();
    for (;;) {
      if (take('+'))
        value += product(), ++operations;
      else if (take('-'))
        value -= product(), ++operations;
      else
        return value;
    }
  }
  int64_t product() {
    int64_t value = atom();
    for (;;) {
      if (take('*')) {
        value *= atom(), ++operations;
      } else if (take('/')) {
        const int64_t divisor = atom();
        ++operations;
        EXPECT_NE(divisor, 0);
        if (divisor == 0) return 0;
        EXPECT_EQ(value % divisor, 0) << "inexact division in " << text_;
        value /= divisor;
      } else {
        return value;
      }
    }
  }
  int64_t atom() {
    if (take('(')) {
      const int64_t value = sum();
      EXPECT_TRUE(take(')')) << text_;
      return value;
    }
    skip_spaces();
    const size_t start = at_;
    while (at_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[at_]))) ++at_;
    EXPECT_GT(at_, start) << "expected a number at " << start << " in " << text_;
    return at_ > start ? std::stoll(text_.substr(start, at_ - start)) : 0;
  }
  std::string text_;
  size_t at_ = 0;
};

TEST(Arithmetic, TargetsAreArithmeticallyCorrect) {
  for (int64_t steps : {1, 3, 6}) {
    TaskSpec spec{"arithmetic", 0, 42, 100};
    spec.arithmetic_steps = steps;
    for (const auto& sample : generate(spec, kBytes)) {
      std::smatch problem;
      ASSERT_TRUE(std::regex_search(sample.prompt, problem,
                                    std::regex("^Compute (.+)\\. Think step by step, then give the final line as "
                                               "'Answer: <number>'\\.\n$")))
          << sample.prompt;
      Evaluator evaluator(problem[1]);
      const int64_t expected = evaluator.parse();
      EXPECT_EQ(evaluator.operations, steps) << problem[1];
      EXPECT_GE(expected, 0);
      EXPECT_EQ(sample.answers, std::vector<std::string>{std::to_string(expected)});
      EXPECT_EQ(extract_final_answer(sample.target), std::to_string(expected));
      EXPECT_EQ(sample.rule, ScoringRule::kFinalAnswer);

      // Every worked step is itself correct and they chain to the answer.
      const auto worked = all_matches(sample.target, std::regex("(\\d+) ([-+*/]) (\\d+) = (\\d+)\\."));
      ASSERT_EQ(static_cast<int64_t>(worked.size()), steps) << sample.target;
      for (const auto& step : worked) {
        const int64_t a = std::stoll(step[1]), b = std::stoll(step[3]), result = std::stoll(step[4]);
        const char op = step[2].str()[0];
        if (op == '/') {
          EXPECT_EQ(a % b, 0) << step[0];
        }
        const int64_t value = op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : a / b;
        EXPECT_EQ(value, result) << step[0];
      }
      EXPECT_EQ(worked.back()[4], std::to_string(expected));
      EXPECT_DOUBLE_EQ(score(sample, "Answer: " + std::to_string(expected + 1)), 0.0);
    }
  }
}

TEST(Arithmetic, PadsWithNoiseOnlyWhenThereIsRoom) {
  const Sample bare = make("arithmetic", 5, kBytes, 1)[0];
  EXPECT_EQ(bare.prompt.rfind("Compute ", 0), 0u) << "a target below the problem's length keeps just the problem";
  EXPECT_EQ(count_noise(bare.prompt), 0);
  EXPECT_EQ(bare.prompt_tokens, byte_tokens(bare.prompt));
  const Sample padded = make("arithmetic", 4096, kBytes, 1)[0];
  EXPECT_GT(count_noise(padded.prompt), 100);
  const size_t question = padded.prompt.find("\nCompute ");
  ASSERT_NE(question, std::string::npos);
  EXPECT_EQ(count_noise(padded.prompt.substr(question)), 0) << "the question comes after all the noise";
}

// --- scoring ---

Sample sample_with(std::vector<std::string> answers, ScoringRule rule) {
  Sample sample;
  sample.answers = std::move(answers);
  sample.rule = rule;
  return sample;
}

TEST(Scoring, AllContainedAveragesCaseInsensitiveHits) {
  const Sample sample = sample_with({"Alpha", "beta", "GAMMA", "delta"}, ScoringRule::kAllContained);
  EXPECT_DOUBLE_EQ(score(sample, "alpha BETA gamma Delta"), 1.0);
  EXPECT_DOUBLE_EQ(score(sample, "ALPHA and gamma"), 0.5);
  EXPECT_DOUBLE_EQ(score(sample, "betas"), 0.25);
  EXPECT_DOUBLE_EQ(score(sample, "nothing"), 0.0);
}

TEST(Scoring, AnyContainedTakesTheBestHit) {
  const Sample sample = sample_with({"Paris", "the capital of France"}, ScoringRule::kAnyContained);
  EXPECT_DOUBLE_EQ(score(sample, "It is PARIS."), 1.0);
  EXPECT_DOUBLE_EQ(score(sample, "paris, the capital of france"), 1.0);
  EXPECT_DOUBLE_EQ(score(sample, "Lyon"), 0.0);
}

TEST(Scoring, FinalAnswerIsExactAfterTheLastPrefix) {
  const Sample sample = sample_with({"32"}, ScoringRule::kFinalAnswer);
  EXPECT_DOUBLE_EQ(score(sample, "7 + 5 = 12.\nAnswer: 32"), 1.0);
  EXPECT_DOUBLE_EQ(score(sample, "Answer:   32  \nthanks"), 1.0);
  EXPECT_DOUBLE_EQ(score(sample, "Answer: 33"), 0.0);
  EXPECT_DOUBLE_EQ(score(sample, "Answer: 32\nAnswer: 31"), 0.0);
  EXPECT_DOUBLE_EQ(score(sample, "Answer: 320"), 0.0);
  EXPECT_DOUBLE_EQ(score(sample, "Answer: 32."), 0.0);
  EXPECT_DOUBLE_EQ(score(sample, "the answer is 32"), 0.0);
}

TEST(Scoring, SampleWithoutAnswersScoresZero) {
  EXPECT_DOUBLE_EQ(score(sample_with({}, ScoringRule::kAllContained), "anything"), 0.0);
  EXPECT_DOUBLE_EQ(score(sample_with({}, ScoringRule::kFinalAnswer), "Answer: "), 0.0);
}

TEST(Scoring, ExtractFinalAnswer) {
  EXPECT_EQ(extract_final_answer("so\nAnswer: 12\n"), "12");
  EXPECT_EQ(extract_final_answer("Answer: 1\nAnswer:  -4 "), "-4");
  EXPECT_EQ(extract_final_answer("Answer:"), "");
  EXPECT_EQ(extract_final_answer("no final line"), std::nullopt);
  EXPECT_EQ(extract_final_answer("answer: 3"), std::nullopt) << "the prefix is case-sensitive";
}

}  // namespace
}  // namespace kvforge::tasks
