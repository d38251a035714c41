#include "runtime/model_config.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "runtime/input_error.h"
#include "runtime/json_file.h"

namespace kvforge {
namespace {

using nlohmann::json;

constexpr int64_t kMaxDimension = int64_t{1} << 24;  // widths, vocabularies, head counts
constexpr int64_t kMaxLayers = 4096;

// Field readers: each names the file and the field when the value is missing or of the wrong kind.
class FieldReader {
 public:
  FieldReader(const json& object, std::string source, std::string prefix)
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  bool has(const std::string& key) const { return object_.contains(key) && !object_.at(key).is_null(); }

  const json& at(const std::string& key) const {
    if (!has(key)) fail(key, "missing (required)");
    return object_.at(key);
  }

  // `limit` rejects sizes no real model has before anything is allocated from them.
  int64_t positive_int(const std::string& key, int64_t limit = kMaxDimension) const {
    int64_t value = integer(at(key), key);
    if (value <= 0 || value > limit)
      fail(key, "expected a positive integer up to " + std::to_string(limit) + ", got " + std::to_string(value));
    return value;
  }

  int64_t positive_int_or(const std::string& key, int64_t fallback, int64_t limit = kMaxDimension) const {
    return has(key) ? positive_int(key, limit) : fallback;
  }

  double positive_number(const std::string& key) const {
    const json& value = at(key);
    if (!value.is_number()) fail(key, "expected a number, got " + json_type_name(value));
    double number = value.get<double>();
    if (!(number > 0.0)) fail(key, "expected a positive number, got " + value.dump());
    return number;
  }

  double positive_number_or(const std::string& key, double fallback) const {
    return has(key) ? positive_number(key) : fallback;
  }

  bool boolean_or(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& value = object_.at(key);
    if (!value.is_boolean()) fail(key, "expected true or false, got " + value.dump());
    return value.get<bool>();
  }

  std::string string_or(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& value = object_.at(key);
    if (!value.is_string()) fail(key, "expected a string, got " + json_type_name(value));
    return value.get<std::string>();
  }

  std::optional<int64_t> optional_int(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    return integer(object_.at(key), key);
  }

  // An integer or a list of integers (eos_token_id is written both ways).
  std::vector<int64_t> int_list(const std::string& key) const {
    if (!has(key)) return {};
    const json& value = object_.at(key);
    if (!value.is_array()) return {integer(value, key)};
    std::vector<int64_t> out;
    for (size_t i = 0; i < value.size(); ++i) out.push_back(integer(value[i], key + "[" + std::to_string(i) + "]"));
    return out;
  }

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    fail_input(source_, prefix_ + key, problem);
  }

 private:
  int64_t integer(const json& value, const std::string& key) const {
    if (!value.is_number_integer()) fail(key, "expected an integer, got " + value.dump());
    return value.get<int64_t>();
  }

  const json& object_;
  std::string source_;
  std::string prefix_;
};

ModelFamily parse_family(const FieldReader& fields) {
  const json& type = fields.at("model_type");
  if (!type.is_string()) fields.fail("model_type", "expected a string, got " + json_type_name(type));
  std::string name = type.get<std::string>();
  if (name == "llama") return ModelFamily::kLlama;
  if (name == "qwen2") return ModelFamily::kQwen2;
  if (name == "qwen3") return ModelFamily::kQwen3;
  if (name == "mistral") return ModelFamily::kMistral;
  fields.fail("model_type", "expected one of llama, qwen2, qwen3, mistral; got '" + name + "' (not supported)");
}

// RoPE settings come either as transformers-5 `rope_parameters` (theta inside) or as the classic
// top-level `rope_theta` plus an optional `rope_scaling` object.
RopeConfig parse_rope(const json& root, const std::string& source) {
  FieldReader top(root, source, "");
  RopeConfig rope;
  const json* scaling = nullptr;
  std::string prefix;
  if (top.has("rope_parameters")) {
    scaling = &root.at("rope_parameters");
    prefix = "rope_parameters.";
    if (!scaling->is_object()) top.fail("rope_parameters", "expected an object, got " + json_type_name(*scaling));
    rope.theta = FieldReader(*scaling, source, prefix).positive_number_or("rope_theta", 10000.0);
  } else {
    rope.theta = top.positive_number_or("rope_theta", 10000.0);
    if (top.has("rope_scaling")) {
      scaling = &root.at("rope_scaling");
      prefix = "rope_scaling.";
      if (!scaling->is_object()) top.fail("rope_scaling", "expected an object, got " + json_type_name(*scaling));
    }
  }
  if (scaling == nullptr) return rope;
  FieldReader fields(*scaling, source, prefix);
  std::string type_key = fields.has("rope_type") ? "rope_type" : "type";
  std::string type = fields.string_or(type_key, "default");
  if (fields.has("partial_rotary_factor") && fields.positive_number("partial_rotary_factor") != 1.0)
    fields.fail("partial_rotary_factor", "expected 1.0 (partial rotary embeddings are not supported)");
  if (type == "default") {
    rope.type = RopeType::kDefault;
  } else if (type == "linear") {
    rope.type = RopeType::kLinear;
    rope.factor = fields.positive_number("factor");
  } else if (type == "llama3") {
    rope.type = RopeType::kLlama3;
    rope.factor = fields.positive_number("factor");
    rope.low_freq_factor = fields.positive_number("low_freq_factor");
    rope.high_freq_factor = fields.positive_number("high_freq_factor");
    rope.original_max_position_embeddings = fields.positive_int("original_max_position_embeddings", int64_t{1} << 40);
    if (rope.high_freq_factor <= rope.low_freq_factor)
      fields.fail("high_freq_factor", "expected greater than low_freq_factor");
  } else {
    fields.fail(type_key, "expected one of default, linear, llama3; got '" + type + "' (not supported)");
  }
  return rope;
}

// Which layers use a sliding window: `layer_types` when present (transformers 5), else the
// family's rule (Mistral: every layer; Qwen2 and Qwen3: layers >= max_window_layers when use_sliding_window).
std::vector<int64_t> parse_sliding_window(const FieldReader& fields, ModelFamily family, int64_t num_layers) {
  std::optional<int64_t> window = fields.optional_int("sliding_window");
  if (window && *window <= 0) fields.fail("sliding_window", "expected a positive integer or null");
  std::vector<int64_t> per_layer(num_layers, 0);
  if (fields.has("layer_types")) {
    const json& types = fields.at("layer_types");
    if (!types.is_array() || static_cast<int64_t>(types.size()) != num_layers)
      fields.fail("layer_types", "expected a list of " + std::to_string(num_layers) + " entries");
    for (int64_t i = 0; i < num_layers; ++i) {
      std::string key = "layer_types[" + std::to_string(i) + "]";
      const json& type = types[i];
      if (type == "full_attention") continue;
      if (type != "sliding_attention") fields.fail(key, "expected full_attention or sliding_attention, got " + type.dump());
      if (!window) fields.fail("sliding_window", "expected an integer since " + key + " is sliding_attention");
      per_layer[i] = *window;
    }
    return per_layer;
  }
  if (!window) return per_layer;
  if (family == ModelFamily::kMistral) {
    std::fill(per_layer.begin(), per_layer.end(), *window);
  } else if ((family == ModelFamily::kQwen2 || family == ModelFamily::kQwen3) &&
             fields.boolean_or("use_sliding_window", false)) {
    int64_t first = fields.has("max_window_layers") ? *fields.optional_int("max_window_layers") : num_layers;
    for (int64_t i = std::max<int64_t>(first, 0); i < num_layers; ++i) per_layer[i] = *window;
  }
  return per_layer;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& root, const std::string& source) {
  if (!root.is_object()) fail_input(source, "", "expected a JSON object, got " + json_type_name(root));
  FieldReader fields(root, source, "");
  ModelConfig config;
  config.source = source;
  config.family = parse_family(fields);
  config.model_type = to_string(config.family);
  config.vocab_size = fields.positive_int("vocab_size");
  config.hidden_size = fields.positive_int("hidden_size");
  config.intermediate_size = fields.positive_int("intermediate_size");
  config.num_layers = fields.positive_int("num_hidden_layers", kMaxLayers);
  config.num_heads = fields.positive_int("num_attention_heads");
  config.num_kv_heads = fields.positive_int_or("num_key_value_heads", config.num_heads);
  if (config.num_heads % config.num_kv_heads != 0)
    fields.fail("num_key_value_heads", "expected a divisor of num_attention_heads (" +
                                           std::to_string(config.num_heads) + "), got " +
                                           std::to_string(config.num_kv_heads));
  if (fields.has("head_dim")) {
    config.head_dim = fields.positive_int("head_dim");
  } else {
    if (config.hidden_size % config.num_heads != 0)
      fields.fail("hidden_size", "expected a multiple of num_attention_heads when head_dim is absent");
    config.head_dim = config.hidden_size / config.num_heads;
  }
  if (config.head_dim % 2 != 0) fields.fail("head_dim", "expected an even number (RoPE rotates pairs)");
  config.max_position_embeddings = fields.positive_int_or("max_position_embeddings", 4096, int64_t{1} << 40);
  config.rms_norm_eps = fields.positive_number_or("rms_norm_eps", 1e-6);
  std::string activation = fields.string_or("hidden_act", "silu");
  if (activation != "silu") fields.fail("hidden_act", "expected silu, got '" + activation + "' (not supported)");
  config.rope = parse_rope(root, source);
  config.tie_word_embeddings = fields.boolean_or("tie_word_embeddings", false);
  if (config.family == ModelFamily::kQwen2) {
    config.qkv_bias = true;  // Qwen2 always has q/k/v biases and none on o_proj
  } else if (config.family == ModelFamily::kQwen3) {
    const bool attention_bias = fields.boolean_or("attention_bias", false);  // on q/k/v/o alike; the MLP has none
    config.qkv_bias = attention_bias;
    config.o_bias = attention_bias;
    config.qk_norm = true;
  } else {
    bool attention_bias = fields.boolean_or("attention_bias", false);
    config.qkv_bias = attention_bias;
    config.o_bias = attention_bias;
    config.mlp_bias = fields.boolean_or("mlp_bias", false);
  }
  config.sliding_window = parse_sliding_window(fields, config.family, config.num_layers);
  config.bos_token_id = fields.optional_int("bos_token_id");
  config.pad_token_id = fields.optional_int("pad_token_id");
  config.eos_token_ids = fields.int_list("eos_token_id");
  for (int64_t id : config.eos_token_ids)
    if (id < 0 || id >= config.vocab_size) fields.fail("eos_token_id", "expected ids below vocab_size");
  return config;
}

ModelConfig ModelConfig::from_file(const std::string& path) { return from_json(read_json_file(path), path); }

int64_t usable_positions(const ModelConfig& config) {
  if (config.rope.type != RopeType::kLinear) return config.max_position_embeddings;
  return static_cast<int64_t>(static_cast<double>(config.max_position_embeddings) * config.rope.factor);
}

std::string usable_positions_text(const ModelConfig& config) {
  std::string text = std::to_string(usable_positions(config)) + " positions (max_position_embeddings " +
                     std::to_string(config.max_position_embeddings);
  if (config.rope.type == RopeType::kLinear) {
    std::ostringstream factor;
    factor << config.rope.factor;
    text += " times linear RoPE scaling's factor " + factor.str();
  }
  return text + " in " + config.source + ")";
}

const char* to_string(ModelFamily family) {
  switch (family) {
    case ModelFamily::kLlama: return "llama";
    case ModelFamily::kQwen2: return "qwen2";
    case ModelFamily::kQwen3: return "qwen3";
    case ModelFamily::kMistral: return "mistral";
  }
  return "unknown";
}

const char* to_string(RopeType type) {
  switch (type) {
    case RopeType::kDefault: return "default";
    case RopeType::kLinear: return "linear";
    case RopeType::kLlama3: return "llama3";
  }
  return "unknown";
}

}  // namespace kvforge

namespace kvforge {

nlohmann::json to_json(const ModelConfig& config) {
  nlohmann::json rope = {{"rope_type", to_string(config.rope.type)}, {"rope_theta", config.rope.theta}};
  if (config.rope.type != RopeType::kDefault) rope["factor"] = config.rope.factor;
  if (config.rope.type == RopeType::kLlama3) {
    rope["low_freq_factor"] = config.rope.low_freq_factor;
    rope["high_freq_factor"] = config.rope.high_freq_factor;
    rope["original_max_position_embeddings"] = config.rope.original_max_position_embeddings;
  }
  static const std::map<ModelFamily, const char*> kArchitecture = {{ModelFamily::kLlama, "LlamaForCausalLM"},
                                                                   {ModelFamily::kQwen2, "Qwen2ForCausalLM"},
                                                                   {ModelFamily::kQwen3, "Qwen3ForCausalLM"},
                                                                   {ModelFamily::kMistral, "MistralForCausalLM"}};
  nlohmann::json json = {
      {"architectures", {kArchitecture.at(config.family)}},
      {"model_type", to_string(config.family)},
      {"vocab_size", config.vocab_size},
      {"hidden_size", config.hidden_size},
      {"intermediate_size", config.intermediate_size},
      {"num_hidden_layers", config.num_layers},
      {"num_attention_heads", config.num_heads},
      {"num_key_value_heads", config.num_kv_heads},
      {"head_dim", config.head_dim},
      {"max_position_embeddings", config.max_position_embeddings},
      {"rms_norm_eps", config.rms_norm_eps},
      {"hidden_act", "silu"},
      {"rope_parameters", rope},
      {"rope_theta", config.rope.theta},
      {"tie_word_embeddings", config.tie_word_embeddings},
  };
  if (config.family == ModelFamily::kLlama) {
    json["attention_bias"] = config.qkv_bias;
    json["mlp_bias"] = config.mlp_bias;
  }
  if (config.family == ModelFamily::kQwen3) json["attention_bias"] = config.qkv_bias;
  // Sliding windows as each family's transformers config reads them back: Mistral windows every layer, the others
  // name each layer's kind in layer_types (one window width for all sliding layers, as every family has).
  const int64_t window = *std::max_element(config.sliding_window.begin(), config.sliding_window.end());
  if (window > 0) {
    json["sliding_window"] = window;
    if (config.family != ModelFamily::kMistral) {
      nlohmann::json types = nlohmann::json::array();
      for (int64_t layer_window : config.sliding_window)
        types.push_back(layer_window > 0 ? "sliding_attention" : "full_attention");
      json["layer_types"] = types;
      json["use_sliding_window"] = true;
    }
  }
  if (config.bos_token_id) json["bos_token_id"] = *config.bos_token_id;
  if (config.pad_token_id) json["pad_token_id"] = *config.pad_token_id;
  if (config.eos_token_ids.size() == 1) json["eos_token_id"] = config.eos_token_ids.front();
  if (config.eos_token_ids.size() > 1) json["eos_token_id"] = config.eos_token_ids;
  return json;
}

}  // namespace kvforge
