#include "eval/tasks/word_lists.h"

#include <set>
#include <stdexcept>
#include <utility>

namespace kvforge::tasks {

const std::vector<std::string>& adjectives() {
  static const std::vector<std::string> kWords = {
      "able",    "active",  "agile",    "alert",    "amber",   "ancient", "angry",   "anxious", "awake",   "bald",
      "bitter",  "black",   "blank",    "bold",     "brave",   "bright",  "brisk",   "broad",   "brown",   "busy",
      "calm",    "careful", "cheap",    "cheerful", "chilly",  "clean",   "clever",  "cloudy",  "clumsy",  "coarse",
      "cold",    "cool",    "cozy",     "crisp",    "crooked", "curious", "damp",    "dark",    "dear",    "deep",
      "dense",   "dizzy",   "dry",      "dull",     "dusty",   "eager",   "early",   "easy",    "elegant", "empty",
      "even",    "faint",   "fair",     "famous",   "fancy",   "fast",    "fierce",  "flat",    "fluffy",  "fond",
      "fragile", "fresh",   "friendly", "frosty",   "funny",   "gentle",  "giant",   "glad",    "golden",  "grand",
      "gray",    "great",   "grumpy",   "happy",    "hard",    "harsh",   "heavy",   "hidden",  "hollow",  "honest",
      "huge",    "humble",  "hungry",   "icy",      "idle",    "jolly",   "juicy",   "keen",    "kind",    "large",
      "late",    "lazy",    "little",   "lively",   "lonely",  "long",    "loud",    "lucky",   "mellow",  "merry",
      "mighty",  "mild",    "modern",   "muddy",    "narrow",  "neat",    "nervous", "noble",   "noisy",   "odd",
      "old",     "orange",  "pale",     "patient",  "plain",   "polite",  "proud",   "purple",  "quick",   "quiet",
      "rapid",   "rare",    "red",      "rich",     "rough",   "round",   "royal",   "rusty",   "salty",   "sharp",
      "shiny",   "short",   "shy",      "silent",   "silly",   "simple",  "sleepy",  "slim",    "slow",    "small",
      "smooth",  "soft",    "solid",    "sour",     "spicy",   "steady",  "steep",   "sticky",  "stormy",  "strange",
      "strong",  "sunny",   "sweet",    "swift",    "tall",    "tame",    "tender",  "thick",   "thin",    "tidy",
      "tiny",    "tired",   "tough",    "vast",     "violet",  "warm",    "weak",    "wet",     "white",   "wide",
      "wild",    "wise",    "witty",    "wooden",   "young",   "zealous",
  };
  return kWords;
}

const std::vector<std::string>& nouns() {
  static const std::vector<std::string> kWords = {
      "anchor",  "apple",  "arrow",   "badge",   "bakery",  "balloon",  "banana",   "barn",   "basket",   "beach",
      "bear",    "bell",   "bicycle", "bird",    "blanket", "boat",     "book",     "bottle", "bread",    "bridge",
      "brush",   "bucket", "butter",  "button",  "cabin",   "cake",     "camera",   "candle", "canoe",    "canyon",
      "carpet",  "castle", "cat",     "cave",    "chair",   "cherry",   "chimney",  "circle", "cloud",    "coat",
      "coin",    "comet",  "compass", "cookie",  "copper",  "corner",   "cottage",  "crayon", "crown",    "cup",
      "curtain", "desert", "diamond", "dog",     "door",    "dragon",   "drum",     "eagle",  "engine",   "feather",
      "fence",   "field",  "flag",    "flower",  "forest",  "fountain", "fox",      "garden", "gate",     "glove",
      "goat",    "guitar", "hammer",  "harbor",  "hat",     "helmet",   "hill",     "horse",  "island",   "jacket",
      "jar",     "kettle", "kite",    "ladder",  "lake",    "lamp",     "lantern",  "lemon",  "letter",   "lion",
      "map",     "meadow", "mirror",  "monkey",  "moon",    "mountain", "mug",      "nest",   "ocean",    "orchard",
      "owl",     "paddle", "palace",  "panda",   "paper",   "parrot",   "pencil",   "piano",  "pillow",   "planet",
      "plate",   "pocket", "pond",    "potato",  "puzzle",  "rabbit",   "radio",    "river",  "robot",    "rocket",
      "saddle",  "sandal", "scarf",   "shell",   "ship",    "shovel",   "sock",     "spoon",  "squirrel", "star",
      "statue",  "stone",  "street",  "sugar",   "table",   "teapot",   "tent",     "ticket", "tiger",    "tower",
      "tractor", "train",  "tree",    "trumpet", "tunnel",  "turtle",   "umbrella", "valley", "village",  "violin",
      "wagon",   "wallet", "window",  "wizard",  "wolf",    "zebra",
  };
  return kWords;
}

std::vector<std::string> distinct_word_keys(Rng& rng, int64_t count) {
  if (count < 0 || count > kMaxWordKeys) throw std::logic_error("distinct_word_keys: count out of range");
  const auto& adjective_list = adjectives();
  const auto& noun_list = nouns();
  std::set<std::string> seen;
  std::vector<std::string> keys;
  // With ~24k combinations and at most kMaxWordKeys keys, redraws are rare and the loop ends quickly.
  while (static_cast<int64_t>(keys.size()) < count) {
    const auto& adjective = adjective_list[rng.uniform_int(0, static_cast<int64_t>(adjective_list.size()) - 1)];
    const auto& noun = noun_list[rng.uniform_int(0, static_cast<int64_t>(noun_list.size()) - 1)];
    std::string key = adjective + "-" + noun;
    if (seen.insert(key).second) keys.push_back(std::move(key));
  }
  return keys;
}

}  // namespace kvforge::tasks
