#pragma once
// Pretraining the built-in base models: a Llama-architecture model with GQA and a byte-level
// tokenizer, trained from scratch on the synthetic task mixture, written as a Hugging Face
// directory that transformers loads.
#include <ATen/ATen.h>
#include <string>
#include <vector>

#include "eval/task_accuracy.h"
#include "runtime/model_config.h"
#include "trainers/task_batches.h"
#include "trainers/training_loop.h"

namespace kvforge {

class DataParallel;

// The byte tokenizer's special tokens: ids 256 and 257.
constexpr int64_t kByteEosId = 256;
constexpr int64_t kBytePadId = 257;

struct PretrainConfig {
  ModelConfig model;         // vocab and special ids are set by make_byte_model_config()
  TaskMixture data;
  int64_t batch_size = 8;    // sequences per micro-batch
  LoopConfig loop;
  uint64_t init_seed = 0;
  at::Device device = at::kCPU;
  std::string out_dir;       // checkpoints, metrics.jsonl; the model goes to out_dir/model
  at::ScalarType export_dtype = at::kFloat;
  int64_t max_shard_bytes = 0;
  TaskAccuracyOptions eval;  // run on the final model (rank 0); no tasks = skip
};

struct PretrainResult {
  std::string model_dir;
  std::vector<StepRecord> records;
  std::vector<TaskAccuracy> accuracy;
  double train_seconds = 0;
  double tokens_per_second = 0;
};

// A Llama config for the byte tokenizer (vocab 264: 256 bytes, EOS, PAD, room to spare).
ModelConfig make_byte_model_config(int64_t hidden_size, int64_t intermediate_size, int64_t num_layers,
                                   int64_t num_heads, int64_t num_kv_heads, int64_t max_position_embeddings,
                                   double rope_theta);

// Checks the data mixture and the eval tasks/lengths (an InputError naming the recipe field), so a
// command can refuse bad input before it prints or writes anything. run_pretrain() calls it too.
void validate(const PretrainConfig& config);

PretrainResult run_pretrain(const PretrainConfig& config, DataParallel* parallel);

}  // namespace kvforge
