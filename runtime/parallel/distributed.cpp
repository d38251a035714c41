#include "runtime/parallel/distributed.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <utility>

#if defined(KVFORGE_HAVE_CUDA) && defined(USE_C10D_NCCL)
#define KVFORGE_HAVE_NCCL 1
#include <c10/cuda/CUDAFunctions.h>

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "runtime/input_error.h"

namespace kvforge {
namespace {

constexpr const char* kEnvironment = "environment";  // the "file" InputErrors name
// The variables torchrun sets for every worker; any one of them means "launched distributed".
constexpr const char* kLaunchVariables[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"};
constexpr int kMaxPort = 65535;

std::optional<std::string> env_value(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

std::string require_env(const char* name) {
  std::optional<std::string> value = env_value(name);
  if (!value)
    fail_input(kEnvironment, name,
               "not set, but other launcher variables are (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and "
               "MASTER_PORT come together, as torchrun sets them)");
  return *value;
}

int parse_int(const char* name, const std::string& text, int min_value, int max_value) {
  int value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || stop != end || (error != std::errc() && error != std::errc::result_out_of_range))
    fail_input(kEnvironment, name, "expected an integer, got '" + text + "'");
  if (error == std::errc::result_out_of_range || value < min_value || value > max_value) {
    std::string range = max_value == INT_MAX ? "at least " + std::to_string(min_value)
                                             : "from " + std::to_string(min_value) + " to " + std::to_string(max_value);
    fail_input(kEnvironment, name, "expected an integer " + range + ", got " + text);
  }
  return value;
}

bool parse_flag(const char* name, const std::string& text) {
  if (text == "True" || text == "true" || text == "1") return true;
  if (text == "False" || text == "false" || text == "0") return false;
  fail_input(kEnvironment, name, "expected True or False, got '" + text + "'");
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address == "::1" || address.rfind("127.", 0) == 0;
}

// Gloo binds one interface: GLOO_SOCKET_IFNAME when set (as in PyTorch); loopback when the
// master is on this host by a loopback address (all ranks are local then); else the address
// this machine's hostname resolves to.
std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master_addr) {
  if (std::optional<std::string> interface = env_value("GLOO_SOCKET_IFNAME"))
    return ::c10d::ProcessGroupGloo::createDeviceForInterface(*interface);
  if (is_loopback(master_addr)) return ::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return ::c10d::ProcessGroupGloo::createDefaultDevice();
}

// Tensors of one dtype, in the caller's order, packed into one flat buffer for one collective.
struct Bucket {
  std::vector<size_t> members;  // indices into the caller's tensor list
  int64_t bytes = 0;
};

// Every rank passes the same shapes and dtypes in the same order, so every rank forms the same
// buckets. A tensor larger than bucket_bytes gets a bucket of its own.
std::vector<Bucket> make_buckets(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  std::vector<Bucket> buckets;
  std::map<at::ScalarType, size_t> filling;  // dtype → its bucket still taking tensors
  for (size_t index = 0; index < tensors.size(); ++index) {
    const int64_t bytes = tensors[index].numel() * static_cast<int64_t>(tensors[index].element_size());
    auto open = filling.find(tensors[index].scalar_type());
    if (open == filling.end() || buckets[open->second].bytes + bytes > bucket_bytes) {
      buckets.emplace_back();
      open = filling.insert_or_assign(tensors[index].scalar_type(), buckets.size() - 1).first;
    }
    buckets[open->second].members.push_back(index);
    buckets[open->second].bytes += bytes;
  }
  return buckets;
}

// flat: [sum of numel] — the bucket's tensors one after another, or the tensor itself when it is
// alone and contiguous (then nothing is copied back).
at::Tensor pack(const std::vector<at::Tensor>& tensors, const Bucket& bucket) {
  if (bucket.members.size() == 1 && tensors[bucket.members[0]].is_contiguous())
    return tensors[bucket.members[0]].view({-1});
  std::vector<at::Tensor> pieces;
  pieces.reserve(bucket.members.size());
  for (size_t index : bucket.members) pieces.push_back(tensors[index].reshape({-1}));
  return at::cat(pieces);
}

void unpack(const at::Tensor& flat, const std::vector<at::Tensor>& tensors, const Bucket& bucket) {
  if (bucket.members.size() == 1 && tensors[bucket.members[0]].is_contiguous()) return;
  int64_t offset = 0;
  for (size_t index : bucket.members) {
    const at::Tensor& tensor = tensors[index];
    tensor.copy_(flat.narrow(0, offset, tensor.numel()).view(tensor.sizes()));
    offset += tensor.numel();
  }
}

}  // namespace

DistributedEnv read_distributed_env() {
  DistributedEnv env;
  bool launched = false;
  for (const char* name : kLaunchVariables) launched = launched || std::getenv(name) != nullptr;
  if (!launched) return env;

  env.world_size = parse_int("WORLD_SIZE", require_env("WORLD_SIZE"), 1, INT_MAX);
  env.rank = parse_int("RANK", require_env("RANK"), 0, INT_MAX);
  if (env.rank >= env.world_size)
    fail_input(kEnvironment, "RANK",
               "expected below WORLD_SIZE=" + std::to_string(env.world_size) + ", got " + std::to_string(env.rank));
  // One process needs no rendezvous: the rest may be missing, but what is set must be valid.
  const bool alone = env.world_size == 1;
  std::optional<std::string> local_rank = alone ? env_value("LOCAL_RANK") : require_env("LOCAL_RANK");
  if (local_rank) env.local_rank = parse_int("LOCAL_RANK", *local_rank, 0, env.world_size - 1);
  std::optional<std::string> master_addr = alone ? env_value("MASTER_ADDR") : require_env("MASTER_ADDR");
  if (master_addr) {
    if (master_addr->empty()) fail_input(kEnvironment, "MASTER_ADDR", "expected a host name or address, got ''");
    env.master_addr = *master_addr;
  }
  std::optional<std::string> master_port = alone ? env_value("MASTER_PORT") : require_env("MASTER_PORT");
  if (master_port) env.master_port = parse_int("MASTER_PORT", *master_port, 1, kMaxPort);
  if (std::optional<std::string> agent = env_value("TORCHELASTIC_USE_AGENT_STORE"))
    env.agent_store = parse_flag("TORCHELASTIC_USE_AGENT_STORE", *agent);
  if (std::optional<std::string> restarts = env_value("TORCHELASTIC_RESTART_COUNT"))
    env.restart_count = parse_int("TORCHELASTIC_RESTART_COUNT", *restarts, 0, INT_MAX);
  if (std::optional<std::string> timeout = env_value("KVFORGE_DIST_TIMEOUT_S"))
    env.timeout = std::chrono::seconds(parse_int("KVFORGE_DIST_TIMEOUT_S", *timeout, 1, INT_MAX));
  return env;
}

struct DataParallel::Group {
  c10::intrusive_ptr<::c10d::Store> store;
  c10::intrusive_ptr<::c10d::Backend> backend;
  int rank = 0;
  int world_size = 1;
  std::chrono::milliseconds timeout{0};
  bool failed = false;  // a collective threw: peers may be gone, so tear down without waiting

  ~Group() {
    if (!backend) return;
    try {
      if (failed)
        backend->abort();
      else
        backend->shutdown();
    } catch (const std::exception&) {
      // Destructors must not throw; the error that mattered was already reported.
    }
  }

  // Runs a c10d call; any failure (a peer gone, the timeout passed) becomes one
  // std::runtime_error naming the operation and this rank.
  template <typename Call>
  auto guarded(const std::string& what, Call&& call) -> decltype(call()) {
    try {
      return call();
    } catch (const c10::Error& error) {
      fail(what, error.what_without_backtrace());
    } catch (const std::exception& error) {
      fail(what, error.what());
    }
  }

  [[noreturn]] void fail(const std::string& what, const std::string& detail) {
    failed = true;
    std::ostringstream message;
    message << "data parallel: " << what << " failed on rank " << rank << " of " << world_size << " (timeout "
            << timeout.count() / 1000.0 << " s): " << detail;
    throw std::runtime_error(message.str());
  }

  void wait(const c10::intrusive_ptr<::c10d::Work>& work, const std::string& what) {
    guarded(what, [&] { work->wait(timeout); });
  }

  // Runs `launch` on each bucket's flat buffer (all buckets in flight together), waits, applies
  // `finish` to the buffer and copies it back into the tensors.
  template <typename Launch, typename Finish>
  void bucketed(const std::string& what, const std::vector<at::Tensor>& tensors, int64_t bucket_bytes, Launch launch,
                Finish finish) {
    const std::vector<Bucket> buckets = make_buckets(tensors, bucket_bytes);
    std::vector<at::Tensor> flats;
    std::vector<c10::intrusive_ptr<::c10d::Work>> works;
    for (const Bucket& bucket : buckets) {
      flats.push_back(pack(tensors, bucket));
      std::vector<at::Tensor> buffer{flats.back()};
      works.push_back(guarded(what, [&] { return launch(buffer); }));
    }
    for (size_t index = 0; index < buckets.size(); ++index) {
      wait(works[index], what);
      finish(flats[index]);
      unpack(flats[index], tensors, buckets[index]);
    }
  }
};

DataParallel::DataParallel(const DistributedEnv& env, const at::Device& device, std::chrono::milliseconds timeout)
    : rank_(env.rank), world_size_(env.world_size), device_(device), timeout_(timeout) {
  TORCH_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "DataParallel: rank ", env.rank,
              " of world size ", env.world_size);
  TORCH_CHECK(timeout.count() > 0, "DataParallel: timeout must be positive");
  if (world_size_ == 1) return;
  TORCH_CHECK(!env.master_addr.empty() && env.master_port > 0 && env.master_port <= kMaxPort,
              "DataParallel: world size ", env.world_size, " needs MASTER_ADDR and MASTER_PORT");

  if (device.is_cuda()) {
#ifdef KVFORGE_HAVE_NCCL
    TORCH_CHECK(!device.has_index() || device.index() == env.local_rank, "DataParallel: device ", device,
                " is not this process's cuda:", env.local_rank, " (LOCAL_RANK)");
    device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
    // NCCL picks the current device for its communicator: make it ours before creating one.
    c10::cuda::set_device(device_.index());
    // NVLink multicast (NVLS) stays off (DESIGN.md, Distributed) unless the launcher chose otherwise.
    setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
#else
    TORCH_CHECK(false, "DataParallel: ", device, " needs NCCL, and this build has no CUDA/NCCL");
#endif
  } else {
    TORCH_CHECK(device.is_cpu(), "DataParallel: unsupported device ", device, " (cpu uses Gloo, cuda uses NCCL)");
  }

  group_ = std::make_unique<Group>();
  group_->rank = rank_;
  group_->world_size = world_size_;
  group_->timeout = timeout;
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  group_->guarded("joining the process group at " + where, [&] {
    ::c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(env.master_port);
    // Under torchrun the agent hosts the store on MASTER_PORT already: binding it again fails.
    store_options.isServer = env.rank == 0 && !env.agent_store;
    store_options.numWorkers = env.agent_store ? std::nullopt : std::optional<std::size_t>(env.world_size);
    store_options.waitWorkers = !env.agent_store;
    store_options.timeout = timeout;
    auto tcp_store = c10::make_intrusive<::c10d::TCPStore>(env.master_addr, store_options);
    // The agent's store outlives restarts and holds its own keys: keep ours apart per attempt.
    group_->store = c10::make_intrusive<::c10d::PrefixStore>("kvforge/attempt_" + std::to_string(env.restart_count),
                                                             std::move(tcp_store));

    if (device_.is_cpu()) {
      auto options = ::c10d::ProcessGroupGloo::Options::create(timeout);
      options->devices.push_back(gloo_device(env.master_addr));
      group_->backend = c10::make_intrusive<::c10d::ProcessGroupGloo>(group_->store, rank_, world_size_, options);
      return;
    }
#ifdef KVFORGE_HAVE_NCCL
    auto options = ::c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;  // the watchdog's limit; wait(timeout) below bounds the host side
    auto nccl = c10::make_intrusive<::c10d::ProcessGroupNCCL>(group_->store, rank_, world_size_, options);
    nccl->setBoundDeviceId(device_);
    nccl->eagerConnectSingleDevice(device_);  // a missing peer fails here, not at the first step
    group_->backend = nccl;
#endif
  });
}

DataParallel::~DataParallel() = default;
DataParallel::DataParallel(DataParallel&&) noexcept = default;
DataParallel& DataParallel::operator=(DataParallel&&) noexcept = default;

void DataParallel::broadcast(std::vector<at::Tensor> tensors) {
  if (!group_) return;
  // Write through detached aliases: parameters are leaves that require grad.
  for (at::Tensor& tensor : tensors) {
    TORCH_CHECK(tensor.device() == device_, "DataParallel::broadcast: tensor on ", tensor.device(), ", expected ",
                device_);
    tensor = tensor.detach();
  }
  ::c10d::BroadcastOptions options;
  options.rootRank = 0;
  options.timeout = timeout_;
  group_->bucketed(
      "broadcast", tensors, /*bucket_bytes=*/25 << 20,
      [&](std::vector<at::Tensor>& buffer) { return group_->backend->broadcast(buffer, options); }, [](at::Tensor&) {});
}

void DataParallel::average_gradients(const std::vector<at::Tensor>& parameters, int64_t bucket_bytes) {
  if (!group_ || parameters.empty()) return;
  TORCH_CHECK(bucket_bytes > 0, "DataParallel::average_gradients: bucket_bytes must be positive");
  ::c10d::AllreduceOptions options;
  options.reduceOp = ::c10d::ReduceOp::SUM;  // Gloo has no AVG: sum, then divide
  options.timeout = timeout_;

  // has_grad: [parameters] — how many ranks hold a grad for each parameter. One small extra
  // collective so a parameter unused on some ranks (a branch not taken) stays in lockstep.
  std::vector<int32_t> local_has_grad;
  local_has_grad.reserve(parameters.size());
  for (const at::Tensor& parameter : parameters) local_has_grad.push_back(parameter.grad().defined() ? 1 : 0);
  at::Tensor has_grad;
  {
    std::vector<at::Tensor> buffer{at::tensor(local_has_grad, at::TensorOptions().dtype(at::kInt).device(device_))};
    c10::intrusive_ptr<::c10d::Work> work =
        group_->guarded("counting gradients", [&] { return group_->backend->allreduce(buffer, options); });
    group_->wait(work, "counting gradients");
    has_grad = buffer[0].to(at::kCPU);
  }
  const int32_t* ranks_with_grad = has_grad.data_ptr<int32_t>();

  std::vector<at::Tensor> grads;
  for (size_t index = 0; index < parameters.size(); ++index) {
    if (ranks_with_grad[index] == 0) continue;  // no rank has one: leave it undefined everywhere
    const at::Tensor& parameter = parameters[index];
    if (!parameter.grad().defined()) parameter.mutable_grad() = at::zeros_like(parameter);
    const at::Tensor& grad = parameter.grad();
    TORCH_CHECK(!grad.is_sparse(), "DataParallel::average_gradients: sparse gradients are not supported");
    TORCH_CHECK(grad.device() == device_, "DataParallel::average_gradients: grad on ", grad.device(), ", expected ",
                device_);
    grads.push_back(grad);
  }
  const double world_size = world_size_;
  group_->bucketed(
      "gradient all-reduce", grads, bucket_bytes,
      [&](std::vector<at::Tensor>& buffer) { return group_->backend->allreduce(buffer, options); },
      [world_size](at::Tensor& flat) { flat.div_(world_size); });
}

std::vector<double> DataParallel::all_reduce(std::vector<double> values, bool maximum) {
  if (!group_ || values.empty()) return values;
  ::c10d::AllreduceOptions options;
  options.reduceOp = maximum ? ::c10d::ReduceOp::MAX : ::c10d::ReduceOp::SUM;
  options.timeout = timeout_;
  const auto count = static_cast<int64_t>(values.size());
  std::vector<at::Tensor> buffer{at::from_blob(values.data(), {count}, at::kDouble)
                                     .to(device_, /*non_blocking=*/false,
                                         /*copy=*/true)};
  c10::intrusive_ptr<::c10d::Work> work =
      group_->guarded("scalar all-reduce", [&] { return group_->backend->allreduce(buffer, options); });
  group_->wait(work, "scalar all-reduce");
  const at::Tensor reduced = buffer[0].to(at::kCPU).contiguous();
  std::copy(reduced.data_ptr<double>(), reduced.data_ptr<double>() + count, values.begin());
  return values;
}

std::vector<double> DataParallel::all_reduce_sum(std::vector<double> values) {
  return all_reduce(std::move(values), /*maximum=*/false);
}

std::vector<double> DataParallel::all_reduce_max(std::vector<double> values) {
  return all_reduce(std::move(values), /*maximum=*/true);
}

double DataParallel::all_reduce_sum(double value) { return all_reduce_sum(std::vector<double>{value})[0]; }

double DataParallel::all_reduce_mean(double value) { return all_reduce_sum(value) / world_size_; }

void DataParallel::barrier() {
  if (!group_) return;
  ::c10d::BarrierOptions options;
  options.timeout = timeout_;
  if (device_.is_cuda()) options.device = device_;
  c10::intrusive_ptr<::c10d::Work> work = group_->guarded("barrier", [&] { return group_->backend->barrier(options); });
  group_->wait(work, "barrier");
}

std::vector<int64_t> DataParallel::shard(int64_t total) const {
  TORCH_CHECK(total >= 0, "DataParallel::shard: total must be non-negative, got ", total);
  std::vector<int64_t> items;
  items.reserve(static_cast<size_t>((total + world_size_ - 1 - rank_) / world_size_ + 1));
  for (int64_t item = rank_; item < total; item += world_size_) items.push_back(item);
  return items;
}

std::vector<int64_t> owned_items(int64_t total, const DataParallel* parallel) {
  if (parallel != nullptr) return parallel->shard(total);
  std::vector<int64_t> all(static_cast<size_t>(std::max<int64_t>(total, 0)));
  std::iota(all.begin(), all.end(), 0);
  return all;
}

}  // namespace kvforge
