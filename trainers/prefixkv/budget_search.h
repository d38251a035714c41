#pragma once
// PrefixKV's allocation for one calibration sample: given each layer's token importance, find the global
// cumulative-importance threshold p at which the layers together evict the target number of tokens, so a
// layer whose attention is concentrated on few tokens gives up more of its cache than one that spreads it.
#include <cstdint>
#include <vector>

namespace kvforge::prefixkv {

// One layer's importance, sorted descending and normalised so the cumulative sum ends at 1.
struct CumulativeImportance {
  std::vector<double> cumulative;  // cumulative[i] = share of the importance held by the i+1 most important tokens
};
CumulativeImportance cumulative_importance(const std::vector<double>& importance);

// Tokens a layer of `tokens` tokens evicts at threshold p: all but the fewest most-important tokens whose share
// reaches p, less `protected_tokens` (sinks and the last token, never evicted); never negative. Non-increasing in p.
int64_t evicted_at(const CumulativeImportance& layer, double p, int64_t protected_tokens);

struct Allocation {
  std::vector<int64_t> evicted;  // per layer
  double threshold = 0;          // the p the bisection settled on
  int64_t target = 0;            // round(evict_fraction × total tokens)
};

// Bisects p in [0, 1] for the threshold whose evicted total is nearest the target, then rescales the counts
// proportionally and distributes the rounding remainder (largest remainders first) so the total is exactly the
// target; no layer evicts more than its tokens less the protected ones. Every layer has the same token count
// in a prefill; `importance[l]` is layer l's score per token.
Allocation allocate_evictions(const std::vector<std::vector<double>>& importance, double evict_fraction,
                              int64_t protected_tokens);

}  // namespace kvforge::prefixkv
