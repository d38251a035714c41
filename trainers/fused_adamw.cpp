#include "trainers/fused_adamw.h"

#include <ATen/ops/_fused_adamw.h>

#include <map>
#include <tuple>
#include <vector>

namespace kvforge {

torch::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups()) {
    auto& options = static_cast<torch::optim::AdamWOptions&>(group.options());
    if (options.amsgrad()) return torch::optim::AdamW::step(closure);
    // The kernel takes one device and dtype per call.
    struct Lists {
      std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs;
      std::vector<double> steps;
    };
    std::map<std::tuple<c10::DeviceType, c10::DeviceIndex, at::ScalarType>, Lists> lists;
    for (const at::Tensor& param : group.params()) {
      if (!param.grad().defined()) continue;
      TORCH_CHECK(!param.grad().is_sparse(), "FusedAdamW: sparse gradients are not supported");
      auto& slot = state_[param.unsafeGetTensorImpl()];
      if (!slot) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->exp_avg(torch::zeros_like(param, at::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(param, at::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*slot);
      Lists& list = lists[{param.device().type(), param.device().index(), param.scalar_type()}];
      list.params.push_back(param);
      list.grads.push_back(param.grad());
      list.exp_avgs.push_back(state.exp_avg());
      list.exp_avg_sqs.push_back(state.exp_avg_sq());
      state.step(state.step() + 1);
      list.steps.push_back(static_cast<double>(state.step()));
    }
    for (auto& [key, list] : lists) {
      // Each parameter's step after this update (the kernel reads it for the bias corrections, as PyTorch's fused
      // path passes it after incrementing).
      const at::Tensor steps =
          at::tensor(list.steps, at::kFloat).to(list.params.front().device(), /*non_blocking=*/true);
      const std::vector<at::Tensor> step_views = steps.unbind(0);
      at::_fused_adamw_(list.params, list.grads, list.exp_avgs, list.exp_avg_sqs, /*max_exp_avg_sqs=*/{}, step_views,
                        options.lr(), std::get<0>(options.betas()), std::get<1>(options.betas()),
                        options.weight_decay(), options.eps(), /*amsgrad=*/false, /*maximize=*/false);
    }
  }
  return loss;
}

}  // namespace kvforge
