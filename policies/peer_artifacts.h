#pragma once
// Artifacts in the files the methods' own code publishes, so a user holding one runs it without retraining
// (`kvforge eval --artifact FILE`) and kvforge's own artifacts can go back to those tools (`kvforge export --format`):
//   DuoAttention  full_attention_heads.tsv, with its config.json beside it (sink_size, recent_size)  -> method duo
//   RLKV          head_dist/rlkv/<model>/<run>/adapter_weights.tsv (the learned mixing gates)          -> method rlkv
//   PrefixKV      confs/prefixkv_<model>_<ratio>.json: per-layer fractions of the prompt evicted       -> method
//   prefixkv
// Both TSVs are np.savetxt's: one row per layer, one tab-separated value per KV head. The files carry no
// fingerprint, so their shapes are checked against the model instead.
#include <string>
#include <utility>
#include <vector>

#include "checkpoints/artifact.h"
#include "runtime/model_config.h"

namespace kvforge {

// True for the paths read_peer_artifact reads (.tsv, .json); anything else is a kvforge artifact.
bool is_peer_artifact(const std::string& path);

// The artifact a peer's file stands for, for `config`'s model: a TSV named adapter_weights.tsv is RLKV's (its
// streaming window is the head policies' default, sink 16 + recent 64, RLKV's bench setting), any other TSV
// DuoAttention's (window from the config.json beside it, when there is one); a JSON list is PrefixKV's, at the
// budget its file name's ratio gives (else one minus the mean evicted fraction). InputError naming the file, the line
// or entry, and what was expected.
Artifact read_peer_artifact(const std::string& path, const ModelConfig& config);

// Gates [layers, kv_heads] as np.savetxt writes them (%.18e, tab-separated): DuoAttention's and RLKV's TSV.
std::string gates_to_tsv(const at::Tensor& gates);

// PrefixKV's budget files for a prefixkv artifact, one per calibrated budget: {file name, JSON text}, named
// prefixkv_<model_name>_<ratio>.json as PrefixKV names them, ratio = 1 - budget (the share evicted).
std::vector<std::pair<std::string, std::string>> prefixkv_budget_files(const Artifact& artifact,
                                                                       const std::string& model_name);

}  // namespace kvforge
