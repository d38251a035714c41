#include "runtime/hf_writer.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/file_system.h"
#include "runtime/input_error.h"
#include "runtime/tensor_io.h"

namespace kvforge {
namespace {

namespace fs = std::filesystem;

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) fail_input(path.string(), "", "write failed");
}

}  // namespace

void write_hf_checkpoint(const std::string& dir, const Transformer& model, const HfWriteOptions& options) {
  const fs::path final_dir(dir);
  const fs::path temp_dir = final_dir.string() + ".tmp";
  remove_tree(temp_dir.string());
  fs::create_directories(temp_dir);

  nlohmann::json config = to_json(model->config);
  config["dtype"] = options.dtype == at::kBFloat16 ? "bfloat16" : "float32";
  write_text(temp_dir / "config.json", config.dump(2) + "\n");
  nlohmann::json generation = {{"do_sample", false}};
  if (model->config.bos_token_id) generation["bos_token_id"] = *model->config.bos_token_id;
  if (!model->config.eos_token_ids.empty()) generation["eos_token_id"] = model->config.eos_token_ids;
  if (model->config.pad_token_id) generation["pad_token_id"] = *model->config.pad_token_id;
  write_text(temp_dir / "generation_config.json", generation.dump(2) + "\n");
  if (!options.tokenizer_json.empty()) write_text(temp_dir / "tokenizer.json", options.tokenizer_json);

  // Group parameters into shards in module order.
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  int64_t shard_bytes = 0;
  for (const auto& item : model->named_parameters()) {
    at::Tensor value = item.value().detach().to(at::kCPU, options.dtype).contiguous();
    const int64_t bytes = static_cast<int64_t>(value.nbytes());
    if (options.max_shard_bytes > 0 && shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace_back(item.key(), value);
    shard_bytes += bytes;
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (shards.size() == 1) {
    save_tensors((temp_dir / "model.safetensors").string(), shards[0], metadata);
  } else {
    nlohmann::json weight_map = nlohmann::json::object();
    int64_t total_bytes = 0;
    for (size_t i = 0; i < shards.size(); ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      save_tensors((temp_dir / name).string(), shards[i], metadata);
      for (const auto& [tensor_name, tensor] : shards[i]) {
        weight_map[tensor_name] = name;
        total_bytes += static_cast<int64_t>(tensor.nbytes());
      }
    }
    nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    write_text(temp_dir / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  remove_tree(final_dir.string());
  fs::rename(temp_dir, final_dir);
}

}  // namespace kvforge
