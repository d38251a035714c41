#pragma once
// Data parallelism for every trainer, over c10d (LibTorch's C++ API has no DDP): one process per
// rank, parameters broadcast from rank 0 once, gradients averaged in flat buckets after backward.
// `torchrun --no-python --nproc-per-node N kvforge train ...` sets the environment read here; a
// plain run without it is world size 1, where DataParallel holds no process group and every
// collective is a no-op.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvforge {

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank on this host: the CUDA device index under NCCL
  std::string master_addr;
  int master_port = 0;
  // torchrun's agent already hosts the TCPStore on master_port: every rank joins as a client.
  bool agent_store = false;
  // TORCHELASTIC_RESTART_COUNT: keys of an earlier attempt in the agent's store are not reused.
  int restart_count = 0;
  // KVFORGE_DIST_TIMEOUT_S: how long a collective waits for a dead or stuck peer before it fails.
  std::chrono::seconds timeout{300};
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE and
// TORCHELASTIC_RESTART_COUNT as torchrun sets them, and KVFORGE_DIST_TIMEOUT_S (seconds) when set. None of the first
// five set → world size 1. Partial or malformed values throw InputError("environment: <VARIABLE>: <problem>").
DistributedEnv read_distributed_env();

class DataParallel {
 public:
  // World size 1: no store, no process group. Otherwise joins a TCPStore at master_addr:port
  // (hosted by rank 0, or by torchrun's agent when env.agent_store) and builds ProcessGroupGloo
  // for a CPU device or ProcessGroupNCCL for CUDA (device cuda:local_rank, made current). Every
  // collective gives up after `timeout`, so a dead or stuck peer becomes an exception
  // (std::runtime_error naming the operation and rank), never a hang.
  DataParallel(const DistributedEnv& env, const at::Device& device,
               std::chrono::milliseconds timeout = std::chrono::seconds(300));
  ~DataParallel();
  DataParallel(DataParallel&&) noexcept;
  DataParallel& operator=(DataParallel&&) noexcept;
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }  // the rank that writes checkpoints and artifacts
  // The device collectives run on: cpu, or cuda:local_rank under NCCL. Put the model here.
  const at::Device& device() const { return device_; }

  // Overwrites every rank's tensors with rank 0's values (parameters, once, before training).
  // All ranks pass the same list (same order, shapes, dtypes), on device().
  void broadcast(std::vector<at::Tensor> tensors);

  // Replaces each parameter's .grad() by its mean over ranks. Grads are packed into flat buckets
  // of about bucket_bytes per dtype, one all-reduce each. A parameter with no grad on any rank is
  // skipped (its grad stays undefined); one with a grad on some ranks only counts zeros for the
  // others and gets the mean everywhere, so all ranks step the same parameters.
  void average_gradients(const std::vector<at::Tensor>& parameters, int64_t bucket_bytes = 25 << 20);

  // Scalars over ranks, for logging losses and counting tokens.
  double all_reduce_sum(double value);
  double all_reduce_mean(double value);
  // Element-wise sums or maxima over ranks, every rank passing as many values: one collective for many numbers
  // (a step's logged metrics, an evaluation's totals).
  std::vector<double> all_reduce_sum(std::vector<double> values);
  std::vector<double> all_reduce_max(std::vector<double> values);

  void barrier();

  // The items of 0..total-1 this rank owns: rank, rank + world_size, ... in increasing order.
  // Over all ranks they partition 0..total-1.
  std::vector<int64_t> shard(int64_t total) const;

 private:
  struct Group;  // the c10d store and backend; null at world size 1

  std::vector<double> all_reduce(std::vector<double> values, bool maximum);

  int rank_ = 0;
  int world_size_ = 1;
  at::Device device_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Group> group_;
};

// The items of 0..total-1 this process runs: all of them without a process group (null), else parallel->shard(total).
std::vector<int64_t> owned_items(int64_t total, const DataParallel* parallel);

}  // namespace kvforge
