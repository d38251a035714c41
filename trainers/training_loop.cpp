#include "trainers/training_loop.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>

#include "checkpoints/training_checkpoint.h"
#include "runtime/input_error.h"
#include "trainers/clip_gradients.h"
#include "runtime/parallel/distributed.h"
#include "trainers/fused_adamw.h"
#include "trainers/run_log.h"

namespace kvforge {
namespace {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerConfig& config, double lr,
                                                        const std::vector<at::Tensor>& parameters) {
  if (config.name == "adamw") {
    return std::make_unique<FusedAdamW>(parameters, torch::optim::AdamWOptions(lr)
                                                        .betas({config.beta1, config.beta2})
                                                        .eps(config.eps)
                                                        .weight_decay(config.weight_decay));
  }
  if (config.name == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        parameters, torch::optim::SGDOptions(lr).momentum(config.momentum).weight_decay(config.weight_decay));
  }
  fail_input("recipe", "train.optimizer", "expected adamw or sgd, got '" + config.name + "'");
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

// bf16 autocast on CUDA for the forward passes of one step; restores the previous state.
class AutocastScope {
 public:
  explicit AutocastScope(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
    previous_ = at::autocast::is_autocast_enabled(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, previous_);
  }

 private:
  bool enabled_;
  bool previous_ = false;
};

// Seconds per phase of one step when enabled; the device is synchronised at each lap so queued kernels count in
// the phase that launched them.
struct PhaseClock {
  PhaseClock(bool enabled, const at::Device& device) : enabled(enabled), device(device) { lap(""); }
  void lap(const std::string& phase) {
    if (!enabled) return;
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
    const auto now = std::chrono::steady_clock::now();
    if (!phase.empty()) seconds[phase] = std::chrono::duration<double>(now - last).count();
    last = now;
  }
  bool enabled;
  at::Device device;
  std::chrono::steady_clock::time_point last;
  std::map<std::string, double> seconds;
};

}  // namespace

void validate(const LoopConfig& config, int world_size) {
  if (config.steps < 1)
    fail_input("recipe", config.section + ".steps", "expected >= 1, got " + std::to_string(config.steps));
  if (config.micro_batches < 1 || config.micro_batches % world_size != 0)
    fail_input("recipe", config.section + ".micro_batches",
               "expected a positive multiple of the world size (" + std::to_string(world_size) + "), got " +
                   std::to_string(config.micro_batches));
}

std::vector<StepRecord> run_training(TrainingObjective& objective, const LoopConfig& config, DataParallel* parallel) {
  const int rank = parallel != nullptr ? parallel->rank() : 0;
  const int world = parallel != nullptr ? parallel->world_size() : 1;
  const bool main_rank = rank == 0;
  validate(config, world);

  const std::vector<at::Tensor> parameters = objective.trainable_parameters();
  if (parallel != nullptr) parallel->broadcast(parameters);
  auto optimizer = make_optimizer(config.optimizer, config.schedule.at(0), parameters);

  int64_t start = 0;
  std::string resumed;  // what the run says about --resume, once its log is open
  if (config.resume) {
    // Every rank reads the same checkpoint; a run without one starts from step 0, and says so.
    if (auto latest = latest_checkpoint(config.out_dir)) {
      start = load_training_checkpoint(*latest, objective.checkpoint_tensors(), *optimizer);
      resumed =
          "resumed from step " + std::to_string(start) + " of " + std::to_string(config.steps) + " (" + *latest + ")";
    } else {
      resumed = "--resume: no checkpoint in " + (config.out_dir.empty() ? std::string("(no out)") : config.out_dir) +
                " yet; starting from step 0";
    }
  }
  if (main_rank && !config.out_dir.empty()) std::filesystem::create_directories(config.out_dir);
  // A resumed run's log goes on from the checkpoint: records of the steps run after it (before the interruption)
  // are dropped, since those steps run again, so metrics.jsonl keeps one record per step.
  const std::string metrics_path = config.out_dir.empty() ? "" : config.out_dir + "/metrics.jsonl";
  if (main_rank && start > 0 && !metrics_path.empty()) keep_records_before(metrics_path, start);
  RunLog log(metrics_path, config.steps, config.log_every, main_rank, /*append=*/start > 0);
  if (!resumed.empty()) log.note(resumed);

  const int64_t local_micro_batches = config.micro_batches / world;
  std::vector<StepRecord> records;
  for (int64_t step = start; step < config.steps; ++step) {
    const double lr = config.schedule.at(step);
    set_learning_rate(*optimizer, lr);
    optimizer->zero_grad();
    PhaseClock phases(config.time_phases, parameters.empty() ? at::Device(at::kCPU) : parameters[0].device());
    double loss_sum = 0.0;
    int64_t tokens = 0;
    std::map<std::string, double> metric_sums;
    for (int64_t local = 0; local < local_micro_batches; ++local) {
      const int64_t micro_batch = rank + local * world;
      MicroBatchLoss result;
      {
        AutocastScope autocast(config.bf16_autocast);
        result = objective.micro_batch_loss(step, micro_batch);
      }
      // Each rank's gradient is later averaged over ranks, so scaling by 1/local_micro_batches here
      // makes the update the mean over all micro-batches of the step.
      (result.loss / static_cast<double>(local_micro_batches)).backward();
      loss_sum += result.loss.item<double>();
      tokens += result.tokens;
      for (const auto& [key, value] : result.metrics) metric_sums[key] += value;
    }
    phases.lap("compute_s");
    if (parallel != nullptr) {
      if (config.time_phases) {
        parallel->barrier();
        phases.lap("wait_s");
      }
      parallel->average_gradients(parameters);
      phases.lap("all_reduce_s");
    }
    double loss = loss_sum, token_total = static_cast<double>(tokens);
    if (parallel != nullptr) {  // one collective for every logged number
      std::vector<double> sums{loss, token_total};
      for (const auto& [key, value] : metric_sums) sums.push_back(value);
      sums = parallel->all_reduce_sum(std::move(sums));
      loss = sums[0];
      token_total = sums[1];
      size_t next = 2;
      for (auto& [key, value] : metric_sums) value = sums[next++];
    }
    loss /= static_cast<double>(config.micro_batches);
    const double grad_norm = clip_gradients(parameters, config.max_grad_norm);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      const auto latest = latest_checkpoint(config.out_dir);
      log.finish();
      throw TrainingDiverged("step " + std::to_string(step + 1) + ": loss " + std::to_string(loss) +
                             ", gradient norm " + std::to_string(grad_norm) +
                             " is not finite; stopped before the update" +
                             (latest ? "; last good checkpoint: " + *latest : "; no checkpoint was written yet"));
    }
    optimizer->step();
    objective.after_step(step);
    phases.lap("update_s");

    for (auto& [key, value] : metric_sums) value /= static_cast<double>(config.micro_batches);
    std::map<std::string, double> values = {{"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm}};
    values.insert(metric_sums.begin(), metric_sums.end());
    values.insert(phases.seconds.begin(), phases.seconds.end());
    log.step(step, values, static_cast<int64_t>(token_total));
    records.push_back({step, loss, lr, grad_norm, static_cast<int64_t>(token_total), metric_sums});

    const bool last = step + 1 == config.steps;
    const bool periodic = config.checkpoint_every > 0 && (step + 1) % config.checkpoint_every == 0;
    if (main_rank && !config.out_dir.empty() && (last || periodic)) {
      save_training_checkpoint(config.out_dir, step + 1, objective.checkpoint_tensors(), *optimizer,
                               {{"kvforge.recipe", config.recipe_text}}, config.keep_checkpoints);
    }
    if (parallel != nullptr && (last || periodic)) parallel->barrier();
    if (config.after_step_hook) config.after_step_hook(step);
  }
  log.finish();
  return records;
}

}  // namespace kvforge
