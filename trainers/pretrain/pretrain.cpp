#include "trainers/pretrain/pretrain.h"

#include <chrono>
#include <torch/utils.h>

#include "runtime/hf_writer.h"
#include "runtime/model_init.h"
#include "runtime/parallel/distributed.h"

namespace kvforge {
namespace {

class PretrainObjective : public TrainingObjective {
 public:
  PretrainObjective(Transformer model, const Tokenizer& tokenizer, const PretrainConfig& config)
      : model_(std::move(model)), tokenizer_(tokenizer), config_(config) {}

  std::vector<at::Tensor> trainable_parameters() override { return model_->parameters(); }

  std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors() override {
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& item : model_->named_parameters()) named.emplace_back(item.key(), item.value());
    return named;
  }

  MicroBatchLoss micro_batch_loss(int64_t step, int64_t micro_batch) override {
    TokenBatch batch = make_task_batch(config_.data, tokenizer_, kByteEosId, kBytePadId, step, micro_batch,
                                       config_.batch_size);
    const at::Device device = config_.device;
    at::Tensor logits = model_->forward(batch.input_ids.to(device), batch.positions.to(device), /*cache=*/nullptr,
                                        /*last_only=*/false, /*causal_prefix=*/true);
    // Tokens processed, padding excluded (the tokens/s people compare across runs).
    const int64_t tokens = (batch.positions >= 0).sum().item<int64_t>();
    return {next_token_loss(logits, batch.labels), tokens, {}};
  }

 private:
  Transformer model_;
  const Tokenizer& tokenizer_;
  const PretrainConfig& config_;
};

}  // namespace

ModelConfig make_byte_model_config(int64_t hidden_size, int64_t intermediate_size, int64_t num_layers,
                                   int64_t num_heads, int64_t num_kv_heads, int64_t max_position_embeddings,
                                   double rope_theta) {
  nlohmann::json json = {{"model_type", "llama"},
                         {"vocab_size", 264},
                         {"hidden_size", hidden_size},
                         {"intermediate_size", intermediate_size},
                         {"num_hidden_layers", num_layers},
                         {"num_attention_heads", num_heads},
                         {"num_key_value_heads", num_kv_heads},
                         {"max_position_embeddings", max_position_embeddings},
                         {"rms_norm_eps", 1e-5},
                         {"rope_theta", rope_theta},
                         {"tie_word_embeddings", false},
                         {"eos_token_id", kByteEosId},
                         {"pad_token_id", kBytePadId}};
  return ModelConfig::from_json(json, "recipe (model.*)");
}

namespace {

std::string pretrain_tokenizer_json() { return byte_tokenizer_json({"<|endoftext|>", "<|pad|>"}); }

}  // namespace

void validate(const PretrainConfig& config) {
  validate(config.data);
  const Tokenizer tokenizer = Tokenizer::from_json_text(pretrain_tokenizer_json(), "byte tokenizer");
  validate_task_accuracy_options(config.eval, tokenizer);
}

PretrainResult run_pretrain(const PretrainConfig& config, DataParallel* parallel) {
  validate(config);  // before training, not after it
  const bool main_rank = parallel == nullptr || parallel->is_main();
  const std::string tokenizer_json = pretrain_tokenizer_json();
  const Tokenizer tokenizer = Tokenizer::from_json_text(tokenizer_json, "byte tokenizer");

  Transformer model(config.model, at::TensorOptions().device(config.device).dtype(at::kFloat));
  initialize_weights(model, config.init_seed);
  model->train();
  PretrainObjective objective(model, tokenizer, config);

  PretrainResult result;
  const auto start = std::chrono::steady_clock::now();
  result.records = run_training(objective, config.loop, parallel);
  result.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int64_t tokens = 0;
  for (const StepRecord& record : result.records) tokens += record.tokens;
  result.tokens_per_second = result.train_seconds > 0 ? tokens / result.train_seconds : 0.0;

  model->eval();
  if (main_rank) {
    result.model_dir = config.out_dir + "/model";
    HfWriteOptions options;
    options.dtype = config.export_dtype;
    options.max_shard_bytes = config.max_shard_bytes;
    options.tokenizer_json = tokenizer_json;
    write_hf_checkpoint(result.model_dir, model, options);
    if (!config.eval.tasks.empty()) {
      TaskAccuracyOptions eval = config.eval;
      eval.eos_token_ids = {kByteEosId};
      eval.arithmetic_steps = config.data.arithmetic_steps;
      torch::NoGradGuard no_grad;
      result.accuracy = evaluate_task_accuracy(model, tokenizer, eval);
    }
  }
  return result;
}

}  // namespace kvforge
