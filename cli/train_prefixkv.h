#pragma once
// `kvforge train` with method: prefixkv — the recipe keys and the calibration run that writes the budget artifact.
#include <string>
#include <vector>

#include "cli/recipe.h"

namespace kvforge {

std::vector<RecipeKey> prefixkv_recipe_schema();
void run_prefixkv_recipe(const Recipe& recipe, bool resume);  // nothing to resume: calibration is seconds

}  // namespace kvforge
