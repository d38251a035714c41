#include <gtest/gtest.h>

#include "cli/recipe.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

std::vector<RecipeKey> schema() {
  return {{"model", "~", ""}, {"max_new_tokens", "64", ""}, {"sampling.temperature", "0", ""},
          {"sampling.top_p", "1.0", ""}, {"stop", "[]", ""}};
}

TEST(Recipe, FileThenOverridesThenTypedReads) {
  const std::string dir = testing::make_temp_dir("recipe");
  testing::write_file(dir + "/r.yaml", "model: models/tiny\nsampling:\n  temperature: 0.7\nstop: [\"\\n\\n\", END]\n");
  Recipe recipe(schema());
  recipe.load_file(dir + "/r.yaml");
  recipe.apply_override("sampling.top_p=0.9");
  recipe.apply_override("max_new_tokens=8");
  EXPECT_EQ(recipe.get_string("model"), "models/tiny");
  EXPECT_DOUBLE_EQ(recipe.get_double("sampling.temperature"), 0.7);
  EXPECT_DOUBLE_EQ(recipe.get_double("sampling.top_p"), 0.9);
  EXPECT_EQ(recipe.get_int("max_new_tokens"), 8);
  EXPECT_EQ(recipe.get_string_list("stop"), std::vector<std::string>({"\n\n", "END"}));
  // The resolved recipe reads back to the same values.
  testing::write_file(dir + "/resolved.yaml", recipe.to_yaml());
  Recipe again(schema());
  again.load_file(dir + "/resolved.yaml");
  EXPECT_DOUBLE_EQ(again.get_double("sampling.top_p"), 0.9);
  EXPECT_EQ(again.get_string_list("stop"), recipe.get_string_list("stop"));
}

TEST(Recipe, UnknownKeysSuggestTheNearest) {
  Recipe recipe(schema());
  EXPECT_INPUT_ERROR(recipe.apply_override("sampling.temprature=1"), "command line", "sampling.temprature",
                     "did you mean 'sampling.temperature'");
  EXPECT_INPUT_ERROR(recipe.apply_override("top_p=0.5"), "did you mean 'sampling.top_p'");
  const std::string dir = testing::make_temp_dir("recipe");
  testing::write_file(dir + "/bad.yaml", "sampling:\n  tempreature: 1\n");
  EXPECT_INPUT_ERROR(recipe.load_file(dir + "/bad.yaml"), "bad.yaml", "sampling.tempreature", "sampling.temperature");
}

TEST(Recipe, MalformedYamlAndWrongTypesNameTheSource) {
  Recipe recipe(schema());
  const std::string dir = testing::make_temp_dir("recipe");
  testing::write_file(dir + "/broken.yaml", "model: [unclosed\n");
  EXPECT_INPUT_ERROR(recipe.load_file(dir + "/broken.yaml"), "broken.yaml", "line", "malformed YAML");
  testing::write_file(dir + "/list.yaml", "- a\n- b\n");
  EXPECT_INPUT_ERROR(recipe.load_file(dir + "/list.yaml"), "list.yaml", "mapping");
  recipe.apply_override("max_new_tokens=many");
  EXPECT_INPUT_ERROR(recipe.get_int("max_new_tokens"), "command line", "max_new_tokens", "integer");
  EXPECT_INPUT_ERROR(recipe.get_string("model"), "model", "missing");
  EXPECT_INPUT_ERROR(recipe.apply_override("novalue"), "key=value");
  EXPECT_INPUT_ERROR(recipe.load_file(dir + "/absent.yaml"), "absent.yaml", "cannot open");
}

}  // namespace
}  // namespace kvforge
