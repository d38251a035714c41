#include "trainers/kvpred/artifact.h"

#include "policies/kv_prediction.h"

namespace kvforge::kvpred {

Artifact kv_prediction_artifact(KvPredictor& predictor, const std::string& recipe_text,
                                std::map<std::string, double> metrics, std::map<std::string, std::string> attributes,
                                at::ScalarType dtype) {
  Artifact artifact;
  artifact.method = kKvPredictionMethod;
  artifact.model = ModelFingerprint::of(predictor->base_config);
  artifact.recipe = recipe_text;
  artifact.metrics = std::move(metrics);
  artifact.attributes = std::move(attributes);
  artifact.attributes["auxiliary_config"] = to_json(predictor->auxiliary->config).dump();
  for (const auto& item : predictor->named_parameters())
    artifact.tensors[item.key()] = item.value().detach().to(at::kCPU, dtype).contiguous();
  artifact.tensors["layer_map"] = at::tensor(predictor->layer_map, at::kLong);
  return artifact;
}

}  // namespace kvforge::kvpred
