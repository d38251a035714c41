#pragma once
// ModelConfig: the parts of a Hugging Face config.json that the Llama family (llama, qwen2, qwen3, mistral)
// needs, validated once so the model code can trust it.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace kvforge {

enum class ModelFamily { kLlama, kQwen2, kQwen3, kMistral };

enum class RopeType { kDefault, kLinear, kLlama3 };

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;             // linear and llama3: positions (or low frequencies) divided by this
  double low_freq_factor = 1.0;    // llama3 only
  double high_freq_factor = 4.0;   // llama3 only
  int64_t original_max_position_embeddings = 8192;  // llama3 only
};

struct ModelConfig {
  std::string source;  // the config.json path, for error messages
  ModelFamily family = ModelFamily::kLlama;
  std::string model_type;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // bias on q_proj, k_proj, v_proj
  bool o_bias = false;
  bool mlp_bias = false;
  // RMSNorm over each head's head_dim on the projected queries and keys, before RoPE (Qwen3's q_norm / k_norm).
  bool qk_norm = false;
  // Per layer: 0 = full causal attention, w > 0 = query i sees keys j with i - j < w.
  std::vector<int64_t> sliding_window;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> pad_token_id;
  std::vector<int64_t> eos_token_ids;

  int64_t query_group_size() const { return num_heads / num_kv_heads; }

  static ModelConfig from_json(const nlohmann::json& json, const std::string& source);
  static ModelConfig from_file(const std::string& path);
};

// How many positions the model is made for: max_position_embeddings, times the factor of linear RoPE scaling (such
// configs give the length before scaling there, as vLLM reads them; llama3-scaled ones give the scaled length).
int64_t usable_positions(const ModelConfig& config);
// Where that number comes from, for errors: "1024 positions (max_position_embeddings in DIR/config.json)".
std::string usable_positions_text(const ModelConfig& config);

const char* to_string(ModelFamily family);
const char* to_string(RopeType type);

}  // namespace kvforge

namespace kvforge {

// config.json text for `config` as transformers 5 writes it (rope_parameters), plus the classic
// top-level rope_theta so transformers 4 reads it too.
nlohmann::json to_json(const ModelConfig& config);

}  // namespace kvforge
