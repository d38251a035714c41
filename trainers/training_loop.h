#pragma once
// The training loop every kvforge trainer shares: optimizer, schedule, gradient accumulation,
// clipping, bf16 autocast on CUDA, a NaN/inf guard, progress, metrics.jsonl, checkpoints with exact
// resume, and data parallelism over c10d.
//
// A step consumes `micro_batches` micro-batches (global, across ranks); rank r takes micro-batches
// r, r + world, ... Each micro-batch loss is a mean over its own tokens and the step's gradient is
// the mean over micro-batches, so any world size with the same `micro_batches` computes the same
// update. Data comes from the objective as a pure function of (step, micro-batch index): the data
// cursor is the step, and a resumed run sees exactly the batches the uninterrupted run would.
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "trainers/lr_schedule.h"

namespace kvforge {

class DataParallel;

struct MicroBatchLoss {
  at::Tensor loss;  // scalar with grad: mean over this micro-batch's tokens
  int64_t tokens = 0;
  std::map<std::string, double> metrics;  // extra per-micro-batch numbers, averaged into the log
};

// What a method trainer provides to the loop.
class TrainingObjective {
 public:
  virtual ~TrainingObjective() = default;
  virtual std::vector<at::Tensor> trainable_parameters() = 0;
  // Named tensors that change during training and must be checkpointed (usually the trainable ones).
  virtual std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors() = 0;
  virtual MicroBatchLoss micro_batch_loss(int64_t step, int64_t micro_batch) = 0;
  // Called after each optimizer step (e.g. to clamp gates into [0, 1]).
  virtual void after_step(int64_t step) {}
};

struct OptimizerConfig {
  std::string name = "adamw";  // adamw | sgd
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double momentum = 0.0;  // sgd only
};

struct LoopConfig {
  int64_t steps = 100;
  int64_t micro_batches = 1;   // per step, across all ranks
  double max_grad_norm = 1.0;  // <= 0 disables clipping
  LrSchedule schedule;
  OptimizerConfig optimizer;
  bool bf16_autocast = false;  // CUDA only
  int64_t log_every = 10;
  // Synchronise the device around each phase of a step and log its seconds: compute_s (the micro-batches' forward
  // and backward), wait_s (a barrier: the time this rank waits for the slowest), all_reduce_s (the gradient
  // all-reduce alone) and update_s (clipping and the optimizer). For scaling studies: the syncs cost a little.
  bool time_phases = false;
  int64_t checkpoint_every = 0;  // 0 = only at the end
  int64_t keep_checkpoints = 2;
  std::string out_dir;
  std::string section = "train";  // the recipe section of these settings, named in errors (e.g. stage1)
  bool resume = false;
  std::string recipe_text;  // stored in checkpoints
  // Test hook: called after each step's checkpoint decision; throwing simulates a crash.
  std::function<void(int64_t step)> after_step_hook;
};

struct StepRecord {
  int64_t step = 0;
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  int64_t tokens = 0;
  std::map<std::string, double> metrics;  // the objective's metrics, averaged over the step's micro-batches (all ranks)
};

// Thrown when the loss or gradient norm stops being finite; the last checkpoint is left as it was.
class TrainingDiverged : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The settings a run needs, checked (an InputError naming SECTION.steps or SECTION.micro_batches): a command calls it
// before it writes anything; run_training calls it again.
void validate(const LoopConfig& config, int world_size);

// Runs steps [start, config.steps) where start is 0 or the resumed checkpoint's step. Returns the
// records of the steps it ran. `parallel` may be null (one process).
std::vector<StepRecord> run_training(TrainingObjective& objective, const LoopConfig& config, DataParallel* parallel);

}  // namespace kvforge
