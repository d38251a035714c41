// The shared training loop: schedule, exact resume after a crash, the NaN guard, the Hugging Face
// writer, and the pretrain debug flavour learning.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/serialize.h>
#include <torch/utils.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checkpoints/training_checkpoint.h"
#include "runtime/hf_writer.h"
#include "runtime/json_file.h"
#include "runtime/model_init.h"
#include "runtime/model_loader.h"
#include "tests/test_util.h"
#include "trainers/clip_gradients.h"
#include "trainers/fused_adamw.h"
#include "trainers/pretrain/pretrain.h"

namespace kvforge {
namespace {

TEST(LrSchedule, WarmupThenCosineToTheFloor) {
  LrSchedule schedule{"cosine", 1e-3, 10, 0.1, 110};
  EXPECT_DOUBLE_EQ(schedule.at(0), 1e-4);
  EXPECT_DOUBLE_EQ(schedule.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(schedule.at(10), 1e-3);
  EXPECT_NEAR(schedule.at(60), 0.55e-3, 1e-12);  // halfway through the decay
  EXPECT_NEAR(schedule.at(110), 1e-4, 1e-12);
  for (int64_t step = 11; step < 110; ++step) EXPECT_LT(schedule.at(step), schedule.at(step - 1));
  LrSchedule constant{"constant", 2e-3, 0, 0.1, 50};
  EXPECT_DOUBLE_EQ(constant.at(37), 2e-3);
}

// The fused update equals LibTorch's AdamW loop step for step (weight decay, a parameter without a gradient on some
// steps, a learning-rate change), and its state saves and loads into AdamW's format.
void expect_fused_adamw_matches_adamw(const at::Device& device) {
  at::Generator generator = at::detail::createCPUGenerator(5);
  const std::vector<std::vector<int64_t>> shapes = {{17, 9}, {33}, {4, 5, 6}};
  std::vector<at::Tensor> fused, reference, starts;
  for (const auto& shape : shapes) {
    const at::Tensor start = at::randn(shape, generator, at::kFloat).to(device);
    starts.push_back(start);
    fused.push_back(start.clone().set_requires_grad(true));
    reference.push_back(start.clone().set_requires_grad(true));
  }
  const auto options = torch::optim::AdamWOptions(3e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1);
  FusedAdamW fused_optimizer(fused, options);
  torch::optim::AdamW reference_optimizer(reference, options);
  for (int step = 0; step < 6; ++step) {
    if (step == 3)
      for (auto* optimizer : std::vector<torch::optim::Optimizer*>{&fused_optimizer, &reference_optimizer})
        for (auto& group : optimizer->param_groups()) group.options().set_lr(1e-2);
    fused_optimizer.zero_grad();
    reference_optimizer.zero_grad();
    for (size_t i = 0; i < shapes.size(); ++i) {
      if (i == 1 && step % 2 == 1) continue;  // no gradient this step: neither optimizer touches it
      const at::Tensor grad = at::randn(shapes[i], generator, at::kFloat).to(device);
      fused[i].mutable_grad() = grad.clone();
      reference[i].mutable_grad() = grad.clone();
    }
    fused_optimizer.step();
    reference_optimizer.step();
    for (size_t i = 0; i < shapes.size(); ++i)
      EXPECT_TRUE(at::allclose(fused[i], reference[i], 1e-5, 1e-6))
          << "tensor " << i << " after step " << step << " on " << device << ": max difference "
          << (fused[i] - reference[i]).abs().max().item<double>();
  }
  EXPECT_GT((fused[0] - starts[0]).abs().max().item<double>(), 1e-2);  // six steps of 1-3e-2 moved it
  std::ostringstream saved;
  torch::serialize::OutputArchive archive;
  fused_optimizer.save(archive);
  archive.save_to(saved);
  std::istringstream stream(saved.str());
  torch::serialize::InputArchive input;
  input.load_from(stream);
  torch::optim::AdamW reloaded(reference, options);
  reloaded.load(input);
  const auto& state =
      static_cast<const torch::optim::AdamWParamState&>(*reloaded.state().at(reference[1].unsafeGetTensorImpl()));
  EXPECT_EQ(state.step(), 3);  // stepped on 3 of the 6 steps
}

TEST(FusedAdamW, MatchesLibTorchsAdamWOnTheCpu) { expect_fused_adamw_matches_adamw(at::kCPU); }

TEST(FusedAdamW, MatchesLibTorchsAdamWOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  expect_fused_adamw_matches_adamw(at::Device(at::kCUDA, 0));
}

// Clipping by global norm equals LibTorch's clip_grad_norm_: the same norm, the same scaled gradients when it is above
// the limit, untouched ones when below, and parameters without a gradient skipped.
TEST(ClipGradients, MatchesLibTorchsClipGradNorm) {
  at::manual_seed(12);
  auto make = [](double scale) {
    std::vector<at::Tensor> parameters;
    for (const auto& shape : std::vector<std::vector<int64_t>>{{7, 3}, {11}, {2, 2, 5}, {4}}) {
      at::Tensor parameter = at::zeros(shape).set_requires_grad(true);
      parameters.push_back(parameter);
    }
    for (size_t i = 0; i < 3; ++i) parameters[i].mutable_grad() = scale * at::randn(parameters[i].sizes());
    return parameters;  // the last has no gradient
  };
  for (const double limit : {0.5, 1e6}) {
    at::manual_seed(3);
    std::vector<at::Tensor> ours = make(2.0);
    at::manual_seed(3);
    std::vector<at::Tensor> theirs = make(2.0);
    const double norm = clip_gradients(ours, limit);
    const double expected = torch::nn::utils::clip_grad_norm_(theirs, limit);
    EXPECT_NEAR(norm, expected, 1e-5 * expected) << "limit " << limit;
    for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(at::allclose(ours[i].grad(), theirs[i].grad(), 1e-5, 1e-7)) << i;
    EXPECT_FALSE(ours[3].grad().defined());
    if (limit < 1)
      EXPECT_NEAR(
          at::linalg_vector_norm(at::cat({ours[0].grad().flatten(), ours[1].grad(), ours[2].grad().flatten()}), 2)
              .item<double>(),
          limit, 1e-5);
  }
  std::vector<at::Tensor> none = {at::zeros({3}).set_requires_grad(true)};
  EXPECT_EQ(clip_gradients(none, 1.0), 0.0);
}

PretrainConfig debug_config(const std::string& out_dir, int64_t steps) {
  PretrainConfig config;
  config.model = make_byte_model_config(/*hidden_size=*/32, /*intermediate_size=*/64, /*num_layers=*/2,
                                        /*num_heads=*/2, /*num_kv_heads=*/1, /*max_position_embeddings=*/512, 10000.0);
  config.data.tasks = {"passkey", "arithmetic"};
  config.data.min_tokens = 250;
  config.data.max_tokens = 270;
  config.batch_size = 2;
  config.loop.steps = steps;
  config.loop.micro_batches = 2;
  config.loop.schedule = {"cosine", 3e-3, 2, 0.1, steps};
  config.loop.log_every = 1000;
  config.loop.checkpoint_every = 2;
  config.loop.keep_checkpoints = 2;
  config.loop.out_dir = out_dir;
  config.out_dir = out_dir;
  return config;
}

TEST(TrainingLoop, ResumeAfterACrashReproducesTheUninterruptedRun) {
  const std::string straight_dir = testing::make_temp_dir("straight");
  PretrainConfig straight = debug_config(straight_dir, 6);
  const PretrainResult reference = run_pretrain(straight, nullptr);
  ASSERT_EQ(reference.records.size(), 6u);

  const std::string crash_dir = testing::make_temp_dir("crash");
  PretrainConfig crashing = debug_config(crash_dir, 6);
  // Dies during step 5 (after the step-4 checkpoint), as a killed process would.
  crashing.loop.after_step_hook = [](int64_t step) {
    if (step == 4) throw std::runtime_error("simulated crash");
  };
  EXPECT_THROW(run_pretrain(crashing, nullptr), std::runtime_error);
  ASSERT_EQ(latest_checkpoint(crash_dir), crash_dir + "/checkpoints/step-00000004");

  PretrainConfig resumed = debug_config(crash_dir, 6);
  resumed.loop.resume = true;
  const PretrainResult continued = run_pretrain(resumed, nullptr);
  ASSERT_EQ(continued.records.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(continued.records[i].step, reference.records[4 + i].step);
    EXPECT_DOUBLE_EQ(continued.records[i].loss, reference.records[4 + i].loss) << "step " << 4 + i;
  }
  // The crashed run had logged step 4 after its last checkpoint; the resumed run ran it again, and metrics.jsonl
  // holds it once, with the rerun's loss: one record per step, as the uninterrupted run's file has.
  std::istringstream lines(read_text_file(crash_dir + "/metrics.jsonl"));
  std::vector<int64_t> steps;
  std::vector<double> losses;
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json record = nlohmann::json::parse(line);
    steps.push_back(record.at("step"));
    losses.push_back(record.at("loss"));
  }
  EXPECT_EQ(steps, std::vector<int64_t>({0, 1, 2, 3, 4, 5}));
  for (size_t i = 0; i < std::min<size_t>(losses.size(), 6); ++i)
    EXPECT_DOUBLE_EQ(losses[i], reference.records[i].loss) << "step " << i;
  // Same final weights, written as the same Hugging Face checkpoint.
  LoadedModel a = load_model(reference.model_dir, at::kCPU, at::kFloat);
  LoadedModel b = load_model(continued.model_dir, at::kCPU, at::kFloat);
  auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
  for (const auto& item : pa) EXPECT_TRUE(at::equal(item.value(), pb[item.key()])) << item.key();
  // Only the newest `keep_checkpoints` survive (older folders, files and all, are removed) and no
  // temporary folder is left behind.
  std::vector<std::string> left;
  for (const auto& entry : std::filesystem::directory_iterator(crash_dir + "/checkpoints"))
    left.push_back(entry.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, std::vector<std::string>({"step-00000004", "step-00000006"}));
}

class ExplodingObjective : public TrainingObjective {
 public:
  ExplodingObjective() : weight_(at::ones({3}).set_requires_grad(true)) {}
  std::vector<at::Tensor> trainable_parameters() override { return {weight_}; }
  std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors() override { return {{"w", weight_}}; }
  MicroBatchLoss micro_batch_loss(int64_t step, int64_t) override {
    at::Tensor loss = (weight_ * weight_).sum();
    if (step == 3) loss = loss * std::nan("");
    return {loss, 3, {}};
  }
  at::Tensor weight_;
};

TEST(TrainingLoop, NonFiniteLossStopsBeforeTheUpdateAndKeepsTheLastCheckpoint) {
  const std::string dir = testing::make_temp_dir("nan");
  ExplodingObjective objective;
  LoopConfig config;
  config.steps = 10;
  config.schedule = {"constant", 0.1, 0, 0.1, 10};
  config.checkpoint_every = 2;
  config.out_dir = dir;
  config.log_every = 1000;
  at::Tensor before;
  try {
    run_training(objective, config, nullptr);
    ADD_FAILURE() << "expected TrainingDiverged";
  } catch (const TrainingDiverged& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("step 4"), std::string::npos) << message;
    EXPECT_NE(message.find("step-00000002"), std::string::npos) << message;
  }
  EXPECT_TRUE(objective.weight_.isfinite().all().item<bool>());
  EXPECT_EQ(latest_checkpoint(dir), dir + "/checkpoints/step-00000002");
}

TEST(HfWriter, WrittenCheckpointsLoadBackIdentically) {
  ModelConfig config = make_byte_model_config(48, 96, 2, 4, 2, 256, 10000.0);
  Transformer model(config, at::TensorOptions());
  initialize_weights(model, /*seed=*/5);
  const std::string dir = testing::make_temp_dir("hf");
  HfWriteOptions single;
  single.tokenizer_json = byte_tokenizer_json({"<|endoftext|>", "<|pad|>"});
  write_hf_checkpoint(dir + "/single", model, single);
  HfWriteOptions sharded = single;
  sharded.max_shard_bytes = 40000;
  write_hf_checkpoint(dir + "/sharded", model, sharded);
  EXPECT_TRUE(std::filesystem::exists(dir + "/sharded/model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/single.tmp"));

  at::Tensor ids = at::randint(0, 256, {2, 17}, at::kLong);
  at::Tensor positions = at::arange(17, at::kLong).unsqueeze(0).repeat({2, 1});
  torch::NoGradGuard no_grad;
  at::Tensor expected = model->forward(ids, positions);
  for (const char* name : {"/single", "/sharded"}) {
    LoadedModel loaded = load_model(dir + name, at::kCPU, at::kFloat);
    EXPECT_EQ(loaded.config.num_kv_heads, 2);
    EXPECT_EQ(loaded.eos_token_ids, std::vector<int64_t>({kByteEosId}));
    ASSERT_TRUE(loaded.tokenizer.has_value());
    EXPECT_EQ(loaded.tokenizer->encode("hé"), std::vector<int64_t>({104, 195, 169}));
    EXPECT_TRUE(at::equal(loaded.model->forward(ids, positions), expected)) << name;
  }
}

// The tiny recipe shrunk to its debug flavour, as a CI-sized run of the real command.
std::string debug_pretrain_command(const std::string& out_dir) {
  return testing::kvforge_binary() + " pretrain " + testing::fixture("../../recipes/tiny-base.yaml") +
         " model.hidden_size=32 model.intermediate_size=64 model.num_layers=2 model.num_heads=2"
         " model.num_kv_heads=1 data.max_tokens=270 train.steps=40 train.lr=1e-2 train.warmup_steps=2"
         " train.batch_size=2 train.micro_batches=2 train.checkpoint_every=0 eval.lengths=[256] eval.samples=2"
         " threads=1 device=cpu out=" +
         out_dir;
}

std::vector<double> logged_losses(const std::string& out_dir) {
  std::vector<double> losses;
  std::istringstream lines(read_text_file(out_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) losses.push_back(nlohmann::json::parse(line).at("loss"));
  return losses;
}

TEST(Pretrain, DebugFlavourOfTheTinyRecipeLearns) {
  const std::string out = testing::make_temp_dir("debug");
  testing::CommandResult run = testing::run_command(debug_pretrain_command(out));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::vector<double> losses = logged_losses(out);
  ASSERT_EQ(losses.size(), 40u);
  EXPECT_GT(losses.front(), 5.0);  // about ln(264) at initialisation
  EXPECT_LT(losses.back(), 3.0) << "first " << losses.front();
  EXPECT_TRUE(std::filesystem::exists(out + "/model/config.json"));
  EXPECT_TRUE(std::filesystem::exists(out + "/accuracy.md"));
  EXPECT_TRUE(std::filesystem::exists(out + "/recipe.yaml"));
}

// Two Gloo ranks splitting each step's micro-batches train exactly like one process.
TEST(Pretrain, TwoGlooRanksMatchOneProcess) {
  const std::string single = testing::make_temp_dir("single"), pair = testing::make_temp_dir("pair");
  testing::CommandResult one = testing::run_command(debug_pretrain_command(single) + " train.steps=8");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const int port = testing::free_port();
  ASSERT_GT(port, 0);
  const std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " WORLD_SIZE=2 ";
  const std::string command = debug_pretrain_command(pair) + " train.steps=8";
  testing::CommandResult two =
      testing::run_command("(" + env + "RANK=0 LOCAL_RANK=0 timeout 300 " + command + " > " + pair +
                           "/rank0.log 2>&1 & " + env + "RANK=1 LOCAL_RANK=1 timeout 300 " + command + " > " + pair +
                           "/rank1.log 2>&1; r1=$?; wait $!; r0=$?; "
                           "exit $((r0 + r1)))");
  ASSERT_EQ(two.exit_code, 0) << read_text_file(pair + "/rank0.log") << read_text_file(pair + "/rank1.log");
  EXPECT_NE(read_text_file(pair + "/rank0.log").find("2 rank(s)"), std::string::npos);
  const std::vector<double> expected = logged_losses(single), got = logged_losses(pair);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-5 * expected[i]) << "step " << i;
  LoadedModel a = load_model(single + "/model", at::kCPU, at::kFloat);
  LoadedModel b = load_model(pair + "/model", at::kCPU, at::kFloat);
  auto pb = b.model->named_parameters();
  for (const auto& item : a.model->named_parameters())
    EXPECT_LE((item.value() - pb[item.key()]).abs().max().item<double>(), 1e-5) << item.key();
}

}  // namespace
}  // namespace kvforge
