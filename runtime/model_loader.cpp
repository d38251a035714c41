#include "runtime/model_loader.h"

#include <set>
#include <sstream>
#include <sys/stat.h>
#include <torch/utils.h>

#include "runtime/input_error.h"
#include "runtime/json_file.h"
#include "runtime/tensor_io.h"

namespace kvforge {
namespace {

std::string shape_text(at::IntArrayRef shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

bool file_exists(const std::string& path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

// Tensors a checkpoint may carry that the model does not need.
bool ignorable(const std::string& name, const ModelConfig& config) {
  const std::string rotary = "rotary_emb.inv_freq";
  if (name.size() >= rotary.size() && name.compare(name.size() - rotary.size(), rotary.size(), rotary) == 0) return true;
  return config.tie_word_embeddings && name == "lm_head.weight";
}

}  // namespace

void load_weights(Transformer& model, const CheckpointTensors& tensors) {
  torch::NoGradGuard no_grad;
  const ModelConfig& config = model->config;
  std::set<std::string> used;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    at::Tensor& parameter = item.value();
    const SafetensorsFile* file = nullptr;
    const TensorEntry* entry = tensors.find(name, &file);
    if (entry == nullptr)
      fail_input(tensors.dir(), "tensor '" + name + "'",
                 "missing (config.json describes a " + config.model_type + " model that needs it)");
    if (at::IntArrayRef(entry->shape) != parameter.sizes())
      fail_input(file->source(), "tensor '" + name + "'.shape",
                 shape_text(entry->shape) + " disagrees with " + config.source + ", which implies " +
                     shape_text(parameter.sizes()));
    if (entry->dtype != DType::kF32 && entry->dtype != DType::kBF16 && entry->dtype != DType::kF16)
      fail_input(file->source(), "tensor '" + name + "'.dtype",
                 std::string("expected F32, BF16 or F16, got ") + dtype_name(entry->dtype));
    parameter.copy_(view_tensor(*file, *entry));
    used.insert(name);
  }
  for (const std::string& name : tensors.names())
    if (used.count(name) == 0 && !ignorable(name, config))
      fail_input(tensors.dir(), "tensor '" + name + "'",
                 "unexpected for a " + config.model_type + " model (wrong architecture in config.json?)");
}

at::ScalarType parse_dtype_name(const std::string& name, const std::string& source, const std::string& field) {
  if (name == "float32" || name == "fp32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16") return at::kHalf;
  fail_input(source, field, "expected float32, bfloat16 or float16, got '" + name + "'");
}

LoadedModel load_model(const std::string& dir, const at::Device& device, at::ScalarType dtype) {
  LoadedModel loaded;
  loaded.dir = dir;
  const std::string config_path = dir + "/config.json";
  struct stat info {};
  if (stat(dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode))
    fail_input(dir, "", "expected a model directory holding config.json and safetensors");
  loaded.config = ModelConfig::from_file(config_path);
  CheckpointTensors tensors = CheckpointTensors::open_dir(dir);
  loaded.model = Transformer(loaded.config, at::TensorOptions().device(device).dtype(dtype));
  load_weights(loaded.model, tensors);
  loaded.model->eval();
  if (file_exists(dir + "/tokenizer.json")) loaded.tokenizer = Tokenizer::from_file(dir + "/tokenizer.json");
  loaded.eos_token_ids = loaded.config.eos_token_ids;
  const std::string generation_path = dir + "/generation_config.json";
  if (file_exists(generation_path)) {
    nlohmann::json generation = read_json_file(generation_path);
    if (generation.is_object() && generation.contains("eos_token_id") && !generation["eos_token_id"].is_null()) {
      const nlohmann::json& eos = generation["eos_token_id"];
      std::vector<int64_t> ids;
      for (const nlohmann::json& id : eos.is_array() ? eos : nlohmann::json::array({eos})) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= loaded.config.vocab_size)
          fail_input(generation_path, "eos_token_id", "expected token ids below vocab_size");
        ids.push_back(id.get<int64_t>());
      }
      loaded.eos_token_ids = ids;
    }
  }
  return loaded;
}

}  // namespace kvforge
