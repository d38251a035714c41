#pragma once
// KV Prediction's trainable half before training: the auxiliary model (a layer-pruned copy of the base, or a separate
// smaller model) with its layer map, and the predictors' initialisation.
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "runtime/kv_prediction.h"
#include "trainers/task_batches.h"

namespace kvforge::kvpred {

// Base layer i reads auxiliary layer floor(i · auxiliary_layers / base_layers): consecutive base layers share one,
// as KV Prediction's mappings do.
std::vector<int64_t> even_layer_map(int64_t base_layers, int64_t auxiliary_layers);

// The base with every k-th layer kept (0, k, 2k, ...), weights copied from the base into `options`' dtype and device
// (embeddings, final norm and output head too); `layer_map` empty = base layer i reads auxiliary layer i / k.
KvPredictor pruned_predictor(const Transformer& base, int64_t every, std::vector<int64_t> layer_map,
                             const at::TensorOptions& options);

// A separate auxiliary model (same vocabulary), its weights copied; `layer_map` empty = even_layer_map.
KvPredictor separate_predictor(const Transformer& base, const Transformer& auxiliary, std::vector<int64_t> layer_map,
                               const at::TensorOptions& options);

// Every predictor as the ridge least-squares map from its auxiliary layer's pre-RoPE keys (values) to the base
// layer's over the valid tokens of `count` batches: the minimiser of the squared consistency error for the auxiliary
// as it is, so training starts from the best linear prediction rather than a random one. `ridge` is relative to the
// mean eigenvalue of the inputs' second moment. Returns the tokens fitted on.
int64_t fit_predictors(KvPredictor& predictor, Transformer& base, const BatchSource& batches, uint64_t seed,
                       int64_t count, double ridge);

}  // namespace kvforge::kvpred
