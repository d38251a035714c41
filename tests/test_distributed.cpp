// Data parallel over c10d (trainers/distributed.h). The two-rank tests are real: this binary
// spawns itself twice, each child runs one hidden DistributedWorker test as a rank of a Gloo group
// on 127.0.0.1, and the parent checks how the children ended. Workers skip in a normal run.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <vector>

#include "runtime/file_system.h"
#include "tests/test_util.h"
#include "runtime/parallel/distributed.h"

extern char** environ;

namespace kvforge {
namespace {

using Clock = std::chrono::steady_clock;

// Set only in the children: names the DistributedWorker scenario to run.
constexpr const char* kWorkerVariable = "KVFORGE_TEST_WORKER";
// The DataParallel timeout a worker uses, in milliseconds.
constexpr const char* kTimeoutVariable = "KVFORGE_TEST_TIMEOUT_MS";
// How the dying rank of the dead-peer scenario exits, so the parent can tell it from a failure.
constexpr int kDeadRankExitCode = 42;
// A short timeout for the failure scenarios: long enough for a loaded 2-core machine to finish
// the rendezvous, short enough to keep the tests quick.
constexpr std::chrono::milliseconds kShortTimeout{5000};

const char* const kDistributedVariables[] = {"RANK",
                                             "WORLD_SIZE",
                                             "LOCAL_RANK",
                                             "MASTER_ADDR",
                                             "MASTER_PORT",
                                             "TORCHELASTIC_USE_AGENT_STORE",
                                             "TORCHELASTIC_RESTART_COUNT",
                                             "KVFORGE_DIST_TIMEOUT_S"};

// ---------------------------------------------------------------------------------------------
// Worker side: runs inside a child process, as one rank.

bool is_worker(const char* scenario) {
  const char* value = std::getenv(kWorkerVariable);
  return value != nullptr && std::string(value) == scenario;
}

#define SKIP_UNLESS_WORKER(scenario) \
  if (!is_worker(scenario)) GTEST_SKIP() << "runs only as a rank spawned by the DistributedTwoRanks tests"

std::chrono::milliseconds worker_timeout() {
  const char* value = std::getenv(kTimeoutVariable);
  return std::chrono::milliseconds(value != nullptr ? std::atol(value) : 60000);
}

at::Tensor random_tensor(at::IntArrayRef sizes, at::ScalarType dtype, uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return at::randn(sizes, generator, at::kDouble).to(dtype);
}

// Different on every rank: what broadcast must overwrite with rank 0's values.
std::vector<at::Tensor> tensors_for_broadcast(int rank) {
  const uint64_t seed = 1000 + static_cast<uint64_t>(rank);
  std::vector<at::Tensor> tensors = {
      random_tensor({300, 7}, at::kFloat, seed),
      random_tensor({13}, at::kDouble, seed + 10),
      random_tensor({5, 5}, at::kBFloat16, seed + 20),
      at::arange(9, at::kLong) * (rank + 1),
  };
  tensors[0].set_requires_grad(true);  // a parameter: a leaf that requires grad
  return tensors;
}

struct GradCase {
  std::vector<int64_t> shape;
  at::ScalarType dtype;
  bool transposed_grad;  // the grad is a non-contiguous view
};

// 64 KiB buckets: the first and the bf16 tensor are each bigger than a bucket; the small ones share.
constexpr int64_t kTestBucketBytes = 64 << 10;
const std::vector<GradCase> kGradCases = {
    {{256, 128}, at::kFloat, false},    {{1000}, at::kFloat, false},   {{40, 40}, at::kDouble, false},
    {{300, 300}, at::kBFloat16, false}, {{77}, at::kHalf, false},      {{33, 21}, at::kFloat, true},
    {{3, 5, 7}, at::kFloat, false},     {{64, 64}, at::kDouble, true},
};

// The same on every rank: rank r's grad is (r + 1) times it.
at::Tensor base_grad(size_t index) {
  const GradCase& spec = kGradCases[index];
  return random_tensor(spec.shape, spec.dtype, 42 + index);
}

void run_cooperate_worker() {
  const DistributedEnv env = read_distributed_env();
  ASSERT_EQ(env.world_size, 2);
  DataParallel parallel(env, at::Device(at::kCPU), worker_timeout());
  const int rank = parallel.rank();
  EXPECT_EQ(rank, env.rank);
  EXPECT_EQ(parallel.world_size(), 2);
  EXPECT_EQ(parallel.is_main(), rank == 0);

  // broadcast: everyone ends with rank 0's values, which were not rank 1's before.
  std::vector<at::Tensor> mine = tensors_for_broadcast(rank);
  const std::vector<at::Tensor> rank0 = tensors_for_broadcast(0);
  if (rank == 1)
    for (size_t index = 0; index < mine.size(); ++index) ASSERT_FALSE(at::equal(mine[index], rank0[index]));
  parallel.broadcast(mine);
  for (size_t index = 0; index < mine.size(); ++index)
    EXPECT_TRUE(at::equal(mine[index], rank0[index])) << "tensor " << index << " on rank " << rank;
  EXPECT_TRUE(mine[0].requires_grad());

  // average_gradients: the exact mean, computed here in the grad's dtype the same way
  // (sum of the two, then halved; the sum of two values does not depend on the order).
  std::vector<at::Tensor> parameters;
  std::vector<at::Tensor> expected;
  for (size_t index = 0; index < kGradCases.size(); ++index) {
    const GradCase& spec = kGradCases[index];
    at::Tensor parameter = at::zeros(spec.shape, spec.dtype).set_requires_grad(true);
    const at::Tensor base = base_grad(index);
    at::Tensor grad = base * (rank + 1);
    if (spec.transposed_grad) grad = grad.t().contiguous().t();
    ASSERT_EQ(grad.is_contiguous(), !spec.transposed_grad);
    parameter.mutable_grad() = grad;
    parameters.push_back(parameter);
    expected.push_back((base * 1 + base * 2).div(2));
  }
  // Used on rank 0 only (a branch rank 1 did not take): rank 1 counts zeros and gets the mean too.
  at::Tensor rank0_only = at::zeros({17}, at::kFloat).set_requires_grad(true);
  const at::Tensor rank0_grad = random_tensor({17}, at::kFloat, 7);
  if (rank == 0) rank0_only.mutable_grad() = rank0_grad.clone();
  parameters.push_back(rank0_only);
  // Used nowhere: stays without a grad on both ranks.
  at::Tensor unused = at::zeros({4}, at::kFloat).set_requires_grad(true);
  parameters.push_back(unused);

  parallel.average_gradients(parameters, kTestBucketBytes);
  for (size_t index = 0; index < kGradCases.size(); ++index) {
    const at::Tensor& grad = parameters[index].grad();
    EXPECT_EQ(grad.scalar_type(), kGradCases[index].dtype);
    EXPECT_TRUE(at::equal(grad, expected[index]))
        << "grad " << index << " (" << kGradCases[index].dtype << ") on rank " << rank << ": max error "
        << (grad.to(at::kDouble) - expected[index].to(at::kDouble)).abs().max().item<double>();
  }
  ASSERT_TRUE(rank0_only.grad().defined()) << "rank " << rank;
  EXPECT_TRUE(at::equal(rank0_only.grad(), rank0_grad.div(2))) << "rank " << rank;
  EXPECT_FALSE(unused.grad().defined()) << "rank " << rank;

  // Scalars.
  const double loss = 1000.25 * (rank + 1);
  EXPECT_EQ(parallel.all_reduce_sum(loss), 1000.25 + 2000.5);
  EXPECT_EQ(parallel.all_reduce_mean(loss), (1000.25 + 2000.5) / 2);
  // Many numbers in one collective: element-wise sums and maxima.
  const std::vector<double> numbers{0.5 * (rank + 1), -3.0 * rank, 1e300 * (1 - rank), rank == 0 ? 7.0 : -7.0};
  EXPECT_EQ(parallel.all_reduce_sum(numbers), (std::vector<double>{1.5, -3.0, 1e300, 0.0}));
  EXPECT_EQ(parallel.all_reduce_max(numbers), (std::vector<double>{1.0, 0.0, 1e300, 7.0}));
  EXPECT_TRUE(parallel.all_reduce_sum(std::vector<double>{}).empty());

  // shard: strided, and over both ranks every item exactly once (counted with all-reduces).
  for (int64_t total : {11, 1, 0, 8}) {
    const std::vector<int64_t> items = parallel.shard(total);
    std::vector<int64_t> strided;
    for (int64_t item = rank; item < total; item += 2) strided.push_back(item);
    EXPECT_EQ(items, strided) << "total " << total << " rank " << rank;
    EXPECT_EQ(owned_items(total, &parallel), strided);
    for (int64_t item = 0; item < total; ++item) {
      const bool owned = std::find(items.begin(), items.end(), item) != items.end();
      EXPECT_EQ(parallel.all_reduce_sum(owned ? 1.0 : 0.0), 1.0) << "item " << item << " of " << total;
    }
  }
  parallel.barrier();
}

// Both ranks join; then rank 1 dies without a word, and rank 0's next collectives must fail
// within the timeout instead of waiting forever.
void run_peer_dies_worker() {
  const DistributedEnv env = read_distributed_env();
  DataParallel parallel(env, at::Device(at::kCPU), worker_timeout());
  parallel.barrier();
  if (parallel.rank() == 1) _exit(kDeadRankExitCode);
  const auto start = Clock::now();
  try {
    for (int step = 0; step < 3; ++step) parallel.all_reduce_sum(1.0);
    ADD_FAILURE() << "collectives with a dead peer did not fail";
  } catch (const std::runtime_error& error) {
    std::cout << "rank 0 got: " << error.what() << std::endl;
    EXPECT_NE(std::string(error.what()).find("rank 0 of 2"), std::string::npos) << error.what();
  }
  EXPECT_LT(Clock::now() - start, worker_timeout() + std::chrono::seconds(5));
}

// Rank 1 is alive but stops taking part: only the timeout can end rank 0's wait.
void run_peer_hangs_worker() {
  const DistributedEnv env = read_distributed_env();
  DataParallel parallel(env, at::Device(at::kCPU), worker_timeout());
  parallel.barrier();
  if (parallel.rank() == 1) {
    std::this_thread::sleep_for(std::chrono::minutes(5));  // the parent kills it first
    _exit(1);
  }
  const auto start = Clock::now();
  try {
    parallel.all_reduce_sum(1.0);
    ADD_FAILURE() << "an all-reduce with a stuck peer did not fail";
  } catch (const std::runtime_error& error) {
    std::cout << "rank 0 got: " << error.what() << std::endl;
    EXPECT_NE(std::string(error.what()).find("scalar all-reduce failed on rank 0 of 2"), std::string::npos);
  }
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, worker_timeout() / 2) << "failed before the timeout: not the timeout that ended it";
  EXPECT_LT(waited, worker_timeout() + std::chrono::seconds(5));
}

TEST(DistributedWorker, Cooperate) {
  SKIP_UNLESS_WORKER("Cooperate");
  run_cooperate_worker();
}

TEST(DistributedWorker, PeerDies) {
  SKIP_UNLESS_WORKER("PeerDies");
  run_peer_dies_worker();
}

TEST(DistributedWorker, PeerHangs) {
  SKIP_UNLESS_WORKER("PeerHangs");
  run_peer_hangs_worker();
}

// ---------------------------------------------------------------------------------------------
// Parent side: spawns the ranks and judges how they end.

using testing::free_port;

struct Rank {
  pid_t pid = -1;
  std::string log_path;
  std::optional<int> status;  // waitpid status once it ended
};

// Starts this test binary as rank `rank`, running only DistributedWorker.<scenario>, with
// stdout and stderr in log_path. Everything is prepared before fork: the child only execs.
Rank spawn_rank(const std::string& scenario, int rank, int world_size,
                const std::map<std::string, std::string>& variables, const std::string& log_path) {
  std::vector<std::string> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const std::string name = text.substr(0, text.find('='));
    bool inherited = name.rfind("GTEST_", 0) != 0 && name.rfind("KVFORGE_TEST_", 0) != 0;
    for (const char* variable : kDistributedVariables) inherited = inherited && name != variable;
    if (inherited) environment.push_back(text);
  }
  std::map<std::string, std::string> set = variables;
  set[kWorkerVariable] = scenario;
  set["RANK"] = std::to_string(rank);
  set["LOCAL_RANK"] = std::to_string(rank);
  set["WORLD_SIZE"] = std::to_string(world_size);
  set["MASTER_ADDR"] = "127.0.0.1";
  for (const auto& [name, value] : set) environment.push_back(name + "=" + value);

  const std::string binary = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string filter = "--gtest_filter=DistributedWorker." + scenario;
  std::vector<char*> argv = {const_cast<char*>(binary.c_str()), const_cast<char*>(filter.c_str()), nullptr};
  std::vector<char*> envp;
  for (std::string& entry : environment) envp.push_back(entry.data());
  envp.push_back(nullptr);

  Rank child;
  child.log_path = log_path;
  const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0) return child;
  child.pid = fork();
  if (child.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // no orphaned rank if the parent test dies
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    execve(binary.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  close(log);
  return child;
}

// Waits for `child` until `deadline`; true when it ended.
bool wait_until(Rank& child, Clock::time_point deadline) {
  while (!child.status) {
    int status = 0;
    const pid_t done = waitpid(child.pid, &status, WNOHANG);
    if (done == child.pid) {
      child.status = status;
    } else if (done < 0 || Clock::now() >= deadline) {
      return false;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return true;
}

void kill_and_reap(Rank& child) {
  if (child.pid <= 0 || child.status) return;
  kill(child.pid, SIGKILL);
  int status = 0;
  waitpid(child.pid, &status, 0);
  child.status = status;
}

std::string read_log(const Rank& child) {
  std::ifstream in(child.log_path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string describe(const Rank& child) {
  std::string how = "is still running";
  if (child.status && WIFEXITED(*child.status)) how = "exited with " + std::to_string(WEXITSTATUS(*child.status));
  if (child.status && WIFSIGNALED(*child.status)) how = "died of signal " + std::to_string(WTERMSIG(*child.status));
  return "rank process " + std::to_string(child.pid) + " " + how + "; its output:\n" + read_log(child);
}

// The rank ran its worker test to a pass: exit 0 and gtest saying so (a filter that matched
// nothing, or a skipped worker, would also exit 0).
void expect_worker_passed(const Rank& child, const std::string& scenario) {
  ASSERT_TRUE(child.status.has_value()) << describe(child);
  EXPECT_TRUE(WIFEXITED(*child.status) && WEXITSTATUS(*child.status) == 0) << describe(child);
  const std::string log = read_log(child);
  EXPECT_NE(log.find("[       OK ] DistributedWorker." + scenario), std::string::npos) << describe(child);
  EXPECT_NE(log.find("[  PASSED  ] 1 test."), std::string::npos) << describe(child);
}

struct TwoRanks {
  std::string dir = testing::make_temp_dir("distributed");
  std::vector<Rank> ranks;

  void spawn(const std::string& scenario, std::map<std::string, std::string> variables) {
    for (int rank = 0; rank < 2; ++rank)
      ranks.push_back(spawn_rank(scenario, rank, 2, variables, dir + "/rank" + std::to_string(rank) + ".log"));
    for (const Rank& child : ranks) ASSERT_GT(child.pid, 0) << "could not start a rank";
  }

  ~TwoRanks() {
    for (Rank& child : ranks) kill_and_reap(child);
    remove_tree(dir);
  }
};

// Loading LibTorch twice and running the collectives on a busy 2-core machine.
constexpr std::chrono::seconds kCooperateBound{180};

TEST(DistributedTwoRanks, CooperateOverGloo) {
  const int port = free_port();
  ASSERT_GT(port, 0);
  TwoRanks run;
  run.spawn("Cooperate", {{"MASTER_PORT", std::to_string(port)}, {kTimeoutVariable, "60000"}});
  const auto deadline = Clock::now() + kCooperateBound;
  for (Rank& child : run.ranks) EXPECT_TRUE(wait_until(child, deadline)) << describe(child);
  for (const Rank& child : run.ranks) expect_worker_passed(child, "Cooperate");
}

// Under torchrun the agent hosts the store and every rank is a client; here this process plays
// the agent. (Were rank 0 to try hosting it too, TCPStore itself ignores the failed bind when
// TORCHELASTIC_USE_AGENT_STORE is set, so what this checks is that the ranks meet in the agent's
// store under this attempt's prefix.)
TEST(DistributedTwoRanks, CooperateThroughAgentStore) {
  ::c10d::TCPStoreOptions options;
  options.port = 0;  // any free port, read back below
  options.isServer = true;
  options.waitWorkers = false;
  options.timeout = std::chrono::seconds(60);
  auto agent_store = c10::make_intrusive<::c10d::TCPStore>("127.0.0.1", options);
  TwoRanks run;
  run.spawn("Cooperate", {{"MASTER_PORT", std::to_string(agent_store->getPort())},
                          {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                          {"TORCHELASTIC_RESTART_COUNT", "3"},
                          {kTimeoutVariable, "60000"}});
  const auto deadline = Clock::now() + kCooperateBound;
  for (Rank& child : run.ranks) EXPECT_TRUE(wait_until(child, deadline)) << describe(child);
  for (const Rank& child : run.ranks) expect_worker_passed(child, "Cooperate");
  const std::vector<std::string> keys = agent_store->listKeys();
  const bool prefixed = std::any_of(keys.begin(), keys.end(),
                                    [](const std::string& key) { return key.rfind("kvforge/attempt_3/", 0) == 0; });
  EXPECT_TRUE(prefixed) << "no key under kvforge/attempt_3/ among " << keys.size() << " in the agent's store";
}

TEST(DistributedTwoRanks, DeadPeerIsAnErrorNotAHang) {
  const int port = free_port();
  ASSERT_GT(port, 0);
  TwoRanks run;
  run.spawn("PeerDies",
            {{"MASTER_PORT", std::to_string(port)}, {kTimeoutVariable, std::to_string(kShortTimeout.count())}});
  // Start-up (loading LibTorch, the rendezvous) plus the timeout, with room for a busy machine.
  const auto deadline = Clock::now() + std::chrono::seconds(60) + kShortTimeout;
  Rank& survivor = run.ranks[0];
  Rank& dead = run.ranks[1];
  ASSERT_TRUE(wait_until(dead, deadline)) << describe(dead);
  EXPECT_TRUE(WIFEXITED(*dead.status) && WEXITSTATUS(*dead.status) == kDeadRankExitCode) << describe(dead);
  ASSERT_TRUE(wait_until(survivor, Clock::now() + kShortTimeout + std::chrono::seconds(20)))
      << "the surviving rank hangs: " << describe(survivor);
  expect_worker_passed(survivor, "PeerDies");
}

TEST(DistributedTwoRanks, StuckPeerTimesOut) {
  const int port = free_port();
  ASSERT_GT(port, 0);
  TwoRanks run;
  run.spawn("PeerHangs",
            {{"MASTER_PORT", std::to_string(port)}, {kTimeoutVariable, std::to_string(kShortTimeout.count())}});
  Rank& waiting = run.ranks[0];
  ASSERT_TRUE(wait_until(waiting, Clock::now() + std::chrono::seconds(60) + kShortTimeout))
      << "rank 0 hangs: " << describe(waiting);
  expect_worker_passed(waiting, "PeerHangs");
  EXPECT_FALSE(wait_until(run.ranks[1], Clock::now())) << "the stuck rank should still be running";
}

// ---------------------------------------------------------------------------------------------
// read_distributed_env and world size 1, in this process.

// Clears the launcher variables for the test and puts back what was there.
class LauncherEnvironment {
 public:
  LauncherEnvironment() {
    for (const char* name : kDistributedVariables) {
      if (const char* value = std::getenv(name)) saved_[name] = value;
      unsetenv(name);
    }
  }
  ~LauncherEnvironment() {
    for (const char* name : kDistributedVariables) unsetenv(name);
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }
  void set(const std::map<std::string, std::string>& variables) {
    for (const char* name : kDistributedVariables) unsetenv(name);
    for (const auto& [name, value] : variables) setenv(name.c_str(), value.c_str(), 1);
  }

 private:
  std::map<std::string, std::string> saved_;
};

const std::map<std::string, std::string> kTorchrunRank1 = {{"RANK", "1"},
                                                           {"WORLD_SIZE", "4"},
                                                           {"LOCAL_RANK", "1"},
                                                           {"MASTER_ADDR", "node0"},
                                                           {"MASTER_PORT", "29500"},
                                                           {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                                           {"TORCHELASTIC_RESTART_COUNT", "2"}};

std::map<std::string, std::string> with(std::map<std::string, std::string> variables, const std::string& name,
                                        const std::optional<std::string>& value) {
  if (value)
    variables[name] = *value;
  else
    variables.erase(name);
  return variables;
}

TEST(DistributedEnv, NoVariablesMeansOneProcess) {
  LauncherEnvironment environment;
  const DistributedEnv env = read_distributed_env();
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_FALSE(env.agent_store);
}

TEST(DistributedEnv, ReadsWhatTorchrunSets) {
  LauncherEnvironment environment;
  environment.set(kTorchrunRank1);
  const DistributedEnv env = read_distributed_env();
  EXPECT_EQ(env.rank, 1);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.master_addr, "node0");
  EXPECT_EQ(env.master_port, 29500);
  EXPECT_TRUE(env.agent_store);
  EXPECT_EQ(env.restart_count, 2);
  EXPECT_EQ(env.timeout, std::chrono::seconds(300));  // unless KVFORGE_DIST_TIMEOUT_S says otherwise
  environment.set(with(kTorchrunRank1, "KVFORGE_DIST_TIMEOUT_S", "45"));
  EXPECT_EQ(read_distributed_env().timeout, std::chrono::seconds(45));

  environment.set(with(kTorchrunRank1, "TORCHELASTIC_USE_AGENT_STORE", "False"));
  EXPECT_FALSE(read_distributed_env().agent_store);
  environment.set({{"RANK", "0"}, {"WORLD_SIZE", "1"}});  // one process needs no rendezvous
  EXPECT_EQ(read_distributed_env().world_size, 1);
}

TEST(DistributedEnv, RejectsPartialOrMalformedVariables) {
  LauncherEnvironment environment;
  environment.set({{"WORLD_SIZE", "2"}});
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: RANK: not set");
  environment.set(with(kTorchrunRank1, "RANK", "4"));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: RANK:", "below WORLD_SIZE=4", "got 4");
  environment.set(with(kTorchrunRank1, "RANK", "one"));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: RANK:", "integer", "'one'");
  environment.set(with(kTorchrunRank1, "RANK", "-1"));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: RANK:", "at least 0");
  environment.set(with(kTorchrunRank1, "WORLD_SIZE", "0"));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: WORLD_SIZE:", "at least 1");
  environment.set(with(kTorchrunRank1, "WORLD_SIZE", "99999999999"));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: WORLD_SIZE:");
  environment.set(with(kTorchrunRank1, "LOCAL_RANK", std::nullopt));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: LOCAL_RANK: not set");
  environment.set(with(kTorchrunRank1, "MASTER_ADDR", std::nullopt));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: MASTER_ADDR: not set");
  environment.set(with(kTorchrunRank1, "MASTER_PORT", "70000"));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: MASTER_PORT:", "1 to 65535", "70000");
  environment.set(with(kTorchrunRank1, "MASTER_PORT", "29500 "));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: MASTER_PORT:", "integer");
  environment.set(with(kTorchrunRank1, "TORCHELASTIC_USE_AGENT_STORE", "maybe"));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: TORCHELASTIC_USE_AGENT_STORE:", "True or False");
  environment.set(with(kTorchrunRank1, "KVFORGE_DIST_TIMEOUT_S", "0"));
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: KVFORGE_DIST_TIMEOUT_S:", "at least 1");
  environment.set({{"MASTER_PORT", "29500"}});
  EXPECT_INPUT_ERROR(read_distributed_env(), "environment: WORLD_SIZE: not set");
}

TEST(DistributedOneProcess, EveryCallIsANoOp) {
  DataParallel parallel(DistributedEnv{}, at::Device(at::kCPU));
  EXPECT_EQ(parallel.rank(), 0);
  EXPECT_EQ(parallel.world_size(), 1);
  EXPECT_TRUE(parallel.is_main());

  const at::Tensor original = random_tensor({6}, at::kFloat, 3);
  std::vector<at::Tensor> tensors = {original.clone()};
  parallel.broadcast(tensors);
  EXPECT_TRUE(at::equal(tensors[0], original));

  at::Tensor with_grad = at::zeros({6}).set_requires_grad(true);
  with_grad.mutable_grad() = original.clone();
  at::Tensor without_grad = at::zeros({6}).set_requires_grad(true);
  parallel.average_gradients({with_grad, without_grad});
  EXPECT_TRUE(at::equal(with_grad.grad(), original));
  EXPECT_FALSE(without_grad.grad().defined());

  EXPECT_EQ(parallel.all_reduce_sum(2.5), 2.5);
  EXPECT_EQ(parallel.all_reduce_mean(2.5), 2.5);
  EXPECT_EQ(parallel.all_reduce_max(std::vector<double>{-1.0, 4.0}), (std::vector<double>{-1.0, 4.0}));
  parallel.barrier();
  EXPECT_EQ(parallel.shard(4), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_TRUE(parallel.shard(0).empty());
  EXPECT_EQ(owned_items(3, nullptr), (std::vector<int64_t>{0, 1, 2}));  // no process group: every item
  EXPECT_EQ(owned_items(3, &parallel), (std::vector<int64_t>{0, 1, 2}));
}

}  // namespace
}  // namespace kvforge
