#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "runtime/safetensors.h"
#include "runtime/tensor_io.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

using testing::fixture;

// A valid file's bytes with one tensor "t" of `count` F32 values and a hand-written header.
std::string handmade(const std::string& header, size_t data_bytes) {
  std::string bytes(8, '\0');
  uint64_t length = header.size();
  std::memcpy(bytes.data(), &length, 8);  // little-endian host (x86-64)
  bytes += header;
  bytes += std::string(data_bytes, '\x01');
  return bytes;
}

TEST(Safetensors, RoundTripsRandomTensorsAndMetadata) {
  const std::string dir = testing::make_temp_dir("st");
  at::manual_seed(7);
  at::Tensor a = at::randn({3, 5});
  at::Tensor b = at::randn({4}).to(at::kBFloat16);
  at::Tensor c = at::randint(0, 1000, {2, 2, 2}, at::kLong);
  save_tensors(dir + "/x.safetensors", {{"a", a}, {"b", b}, {"c", c}}, {{"kvforge.method", "test"}});
  EXPECT_FALSE(std::filesystem::exists(dir + "/x.safetensors.tmp"));
  SafetensorsFile file = SafetensorsFile::open(dir + "/x.safetensors");
  EXPECT_EQ(file.metadata().at("kvforge.method"), "test");
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_TRUE(at::equal(view_tensor(file, *file.find("a")), a));
  EXPECT_TRUE(at::equal(view_tensor(file, *file.find("b")), b));
  EXPECT_TRUE(at::equal(view_tensor(file, *file.find("c")), c));
  EXPECT_EQ(file.find("missing"), nullptr);
}

TEST(Safetensors, ShardedCheckpointHoldsTheSameTensorsAsSingleFile) {
  CheckpointTensors single = CheckpointTensors::open_dir(fixture("llama"));
  CheckpointTensors sharded = CheckpointTensors::open_dir(fixture("llama-sharded"));
  ASSERT_EQ(single.names(), sharded.names());
  for (const std::string& name : single.names()) {
    const SafetensorsFile *file_a = nullptr, *file_b = nullptr;
    const TensorEntry* a = single.find(name, &file_a);
    const TensorEntry* b = sharded.find(name, &file_b);
    EXPECT_TRUE(at::equal(view_tensor(*file_a, *a), view_tensor(*file_b, *b))) << name;
  }
}

TEST(Safetensors, RejectsCorruptFilesWithFieldNames) {
  const std::string t = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_NO_THROW(SafetensorsFile::from_bytes(handmade(t, 8), "ok"));

  std::string truncated = handmade(t, 8);
  truncated.resize(truncated.size() - 3);
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(truncated, "cut.safetensors"), "cut.safetensors", "'t'.data_offsets",
                     "out of range");
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes("abc", "tiny"), "tiny", "header length");
  std::string huge_header = handmade(t, 8);
  huge_header[5] = 0x7f;
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(huge_header, "h"), "header length", "does not fit");
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(handmade("{not json", 0), "j"), "j (header)", "malformed JSON");
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(
                         handmade(R"({"t":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8), "d"),
                     "'t'.dtype");
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(
                         handmade(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "s"),
                     "'t'.data_offsets", "shape and dtype need 12");
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(
                         handmade(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                                     "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "o"),
                     "'b'.data_offsets", "overlaps");
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(
                         handmade(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "g"),
                     "gap");
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(handmade(t, 12), "trail"), "trailing");
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(
                         handmade(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "n"),
                     "'t'.shape");
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(
                         handmade(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
                         "ov"),
                     "'t'.data_offsets");
  EXPECT_INPUT_ERROR(SafetensorsFile::from_bytes(handmade(R"({"__metadata__":{"k":1}})", 0), "m"), "__metadata__.k");
  EXPECT_INPUT_ERROR(SafetensorsFile::open("/nonexistent/x.safetensors"), "/nonexistent/x.safetensors", "cannot open");
}

TEST(Safetensors, ShardIndexMustMatchShards) {
  const std::string dir = testing::make_temp_dir("shards");
  std::filesystem::copy(fixture("llama-sharded"), dir, std::filesystem::copy_options::recursive |
                                                           std::filesystem::copy_options::overwrite_existing);
  std::string text = R"({"weight_map": {"model.norm.weight": "model-00001-of-00003.safetensors"}})";
  testing::write_file(dir + "/model.safetensors.index.json", text);
  EXPECT_INPUT_ERROR(CheckpointTensors::open_dir(dir), "model.safetensors.index.json", "weight_map.model.norm.weight",
                     "no such tensor");
  testing::write_file(dir + "/model.safetensors.index.json", R"({"weight_map": {"x": "../evil.safetensors"}})");
  EXPECT_INPUT_ERROR(CheckpointTensors::open_dir(dir), "weight_map.x", "same directory");
  std::filesystem::remove(dir + "/model.safetensors.index.json");
  EXPECT_INPUT_ERROR(CheckpointTensors::open_dir(dir), "expected model.safetensors or");
}

}  // namespace
}  // namespace kvforge
