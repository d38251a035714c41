#pragma once
// The kvpred artifact (layout in policies/kv_prediction.h) from a predictor in training.
#include <map>
#include <string>

#include "checkpoints/artifact.h"
#include "runtime/kv_prediction.h"

namespace kvforge::kvpred {

// Parameters stored in `dtype` (the base checkpoint's, so an 8B auxiliary is not doubled in float32); the
// auxiliary's config.json and `attributes` in the metadata.
Artifact kv_prediction_artifact(KvPredictor& predictor, const std::string& recipe_text,
                                std::map<std::string, double> metrics, std::map<std::string, std::string> attributes,
                                at::ScalarType dtype);

}  // namespace kvforge::kvpred
