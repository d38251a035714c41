// The artifact format: metadata and tensors round-trip, bad files and other models' artifacts are refused
// with the field that is wrong.
#include <dirent.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "checkpoints/artifact.h"
#include "policies/policy.h"
#include "runtime/tensor_io.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

using testing::fixture;

Artifact sample_artifact() {
  at::manual_seed(9);
  Artifact artifact;
  artifact.method = "rlkv";
  artifact.model = ModelFingerprint::of(ModelConfig::from_file(fixture("../../models/tiny-base/config.json")));
  artifact.recipe = "method: rlkv\ntrain:\n  steps: 10\n";
  artifact.metrics = {{"accuracy", 0.875}, {"kv_ratio", 0.31}};
  artifact.tensors["head_scores"] = at::rand({3, 2});
  artifact.tensors["head_mask"] = at::randint(0, 2, {3, 2}, at::kLong);
  return artifact;
}

TEST(Artifact, RoundTripsMetadataAndTensorsAtomically) {
  const std::string dir = testing::make_temp_dir("artifact");
  const Artifact written = sample_artifact();
  write_artifact(dir + "/heads.safetensors", written);
  const Artifact read = read_artifact(dir + "/heads.safetensors");
  EXPECT_EQ(read.method, "rlkv");
  EXPECT_EQ(read.recipe, written.recipe);
  EXPECT_EQ(read.metrics, written.metrics);
  EXPECT_EQ(read.model.num_layers, 3);
  EXPECT_EQ(read.model.config_hash, written.model.config_hash);
  EXPECT_EQ(read.model.config_hash.size(), 16u);
  ASSERT_EQ(read.tensors.size(), 2u);
  for (const auto& [name, tensor] : written.tensors) EXPECT_TRUE(at::equal(read.tensors.at(name), tensor)) << name;
  // Only the artifact is left behind: the temporary file was renamed, not copied.
  int entries = 0;
  DIR* listing = opendir(dir.c_str());
  while (dirent* entry = readdir(listing)) entries += entry->d_name[0] != '.';
  closedir(listing);
  EXPECT_EQ(entries, 1);
  EXPECT_NO_THROW(check_artifact_matches(read, ModelConfig::from_file(fixture("../../models/tiny-base/config.json")),
                                         "models/tiny-base"));
}

TEST(Artifact, RefusesOtherModelsAndBadMetadata) {
  const std::string dir = testing::make_temp_dir("artifact-bad");
  write_artifact(dir + "/heads.safetensors", sample_artifact());
  const Artifact artifact = read_artifact(dir + "/heads.safetensors");
  const ModelConfig gpu = ModelConfig::from_file(fixture("../../models/small-base-gpu/config.json"));
  EXPECT_INPUT_ERROR(check_artifact_matches(artifact, gpu, "models/small-base-gpu"), "heads.safetensors",
                     "kvforge.model.layers", "made for another model", "3 here, 6 in models/small-base-gpu");
  // Same shapes, other rope theta: only the config hash tells them apart.
  ModelConfig retuned = ModelConfig::from_file(fixture("../../models/tiny-base/config.json"));
  retuned.rope.theta = 500000;
  EXPECT_INPUT_ERROR(check_artifact_matches(artifact, retuned, "elsewhere"), "kvforge.model.config_hash");

  const at::Tensor tensor = at::ones({2});
  save_tensors(dir + "/plain.safetensors", {{"x", tensor}}, {});
  EXPECT_INPUT_ERROR(read_artifact(dir + "/plain.safetensors"), "plain.safetensors", "kvforge.format_version",
                     "not a kvforge artifact");
  std::map<std::string, std::string> future{{"kvforge.format_version", "7"}};
  save_tensors(dir + "/future.safetensors", {{"x", tensor}}, future);
  EXPECT_INPUT_ERROR(read_artifact(dir + "/future.safetensors"), "reads version 1", "version 7");
  // A valid artifact of a method no policy reads yet is refused by name.
  Artifact unread = artifact;
  unread.method = "mamba";
  EXPECT_INPUT_ERROR(policies_from_artifact(std::make_shared<const Artifact>(unread)), "kvforge.method", "'mamba'");
}

}  // namespace
}  // namespace kvforge
