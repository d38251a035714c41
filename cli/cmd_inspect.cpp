// kvforge inspect: a checkpoint directory's config and tensor table, or a safetensors file's
// metadata (artifacts keep theirs under kvforge.*) and tensors.
#include <iomanip>
#include <iostream>
#include <sys/stat.h>

#include "cli/commands.h"
#include "runtime/input_error.h"
#include "runtime/model_config.h"
#include "runtime/safetensors.h"

namespace kvforge {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

struct TensorRow {
  std::string name, dtype, shape, file;
  int64_t numel = 0;
  uint64_t bytes = 0;
};

void print_tensor_table(const std::vector<TensorRow>& rows) {
  size_t name_width = 6, shape_width = 5;
  for (const TensorRow& row : rows) {
    name_width = std::max(name_width, row.name.size());
    shape_width = std::max(shape_width, row.shape.size());
  }
  std::cout << std::left << std::setw(static_cast<int>(name_width) + 2) << "tensor" << std::setw(6) << "dtype"
            << std::setw(static_cast<int>(shape_width) + 2) << "shape" << "file\n";
  int64_t params = 0;
  uint64_t bytes = 0;
  for (const TensorRow& row : rows) {
    std::cout << std::setw(static_cast<int>(name_width) + 2) << row.name << std::setw(6) << row.dtype
              << std::setw(static_cast<int>(shape_width) + 2) << row.shape << row.file << "\n";
    params += row.numel;
    bytes += row.bytes;
  }
  std::cout << rows.size() << " tensors, " << params << " elements, " << std::fixed << std::setprecision(2)
            << bytes / 1048576.0 << " MiB\n";
}

TensorRow row_of(const TensorEntry& entry, const std::string& file) {
  return {entry.name, dtype_name(entry.dtype), shape_text(entry.shape), file, entry.numel(), entry.end - entry.begin};
}

std::string base_name(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void inspect_checkpoint(const std::string& dir) {
  // Everything is read and validated before anything is printed: bad input gives one error line.
  const ModelConfig config = ModelConfig::from_file(dir + "/config.json");
  CheckpointTensors tensors = CheckpointTensors::open_dir(dir);
  std::cout << "model_type      " << config.model_type << "\n"
            << "layers          " << config.num_layers << "\n"
            << "hidden_size     " << config.hidden_size << " (intermediate " << config.intermediate_size << ")\n"
            << "heads           " << config.num_heads << " query, " << config.num_kv_heads << " KV (group "
            << config.query_group_size() << "), head_dim " << config.head_dim << "\n"
            << "vocab_size      " << config.vocab_size << (config.tie_word_embeddings ? " (tied embeddings)" : "") << "\n"
            << "rope            " << to_string(config.rope.type) << ", theta " << config.rope.theta;
  if (config.rope.type != RopeType::kDefault) std::cout << ", factor " << config.rope.factor;
  std::cout << "\nbiases          qkv " << (config.qkv_bias ? "yes" : "no") << ", o " << (config.o_bias ? "yes" : "no")
            << ", mlp " << (config.mlp_bias ? "yes" : "no") << "\nsliding window ";
  for (int64_t window : config.sliding_window) std::cout << " " << (window > 0 ? std::to_string(window) : "-");
  std::cout << "\nmax positions   " << config.max_position_embeddings << "\n\n";
  std::vector<TensorRow> rows;
  for (const std::string& name : tensors.names()) {
    const SafetensorsFile* file = nullptr;
    const TensorEntry* entry = tensors.find(name, &file);
    rows.push_back(row_of(*entry, base_name(file->source())));
  }
  print_tensor_table(rows);
}

void inspect_file(const std::string& path) {
  SafetensorsFile file = SafetensorsFile::open(path);
  if (file.metadata().empty()) {
    std::cout << "metadata: none\n";
  } else {
    std::cout << "metadata:\n";
    for (const auto& [key, value] : file.metadata()) {
      // Multi-line values (an artifact's recipe) continue indented under their key.
      std::string text = value;
      while (!text.empty() && text.back() == '\n') text.pop_back();
      for (size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at + 5)) text.replace(at, 1, "\n    ");
      std::cout << "  " << key << ": " << text << "\n";
    }
  }
  std::cout << "\n";
  std::vector<TensorRow> rows;
  for (const TensorEntry& entry : file.tensors()) rows.push_back(row_of(entry, base_name(path)));
  print_tensor_table(rows);
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* command =
      app.add_subcommand("inspect", "Print a checkpoint's config and tensors, or an artifact's metadata and tensors");
  command->add_option("path", *path, "model directory or .safetensors file")->required();
  command->callback([path] {
    struct stat info {};
    if (stat(path->c_str(), &info) != 0) fail_input(*path, "", "no such file or directory");
    if (S_ISDIR(info.st_mode)) {
      inspect_checkpoint(*path);
    } else {
      inspect_file(*path);
    }
  });
}

}  // namespace kvforge
