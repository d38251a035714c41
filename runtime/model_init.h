#pragma once
// Fresh weights for a model trained from scratch (the built-in base models).
#include <cstdint>

#include "runtime/transformer.h"

namespace kvforge {

// Normal(0, std) for projections and embeddings, with the residual outputs (o_proj, down_proj)
// scaled by 1/sqrt(2·layers) so the residual stream does not grow with depth; norms 1, biases 0.
void initialize_weights(Transformer& model, uint64_t seed, double std = 0.02);

}  // namespace kvforge
