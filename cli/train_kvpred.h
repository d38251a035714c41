#pragma once
// `kvforge train` with method: kvpred — KV Prediction: an auxiliary model (a layer-pruned copy of the base or a
// separate smaller model) and per-layer predictors of the base's KV cache, the predictors initialised by least squares
// and everything trained through the frozen base; exported with the untrained initialisation beside it for comparison.
#include <vector>

#include "cli/recipe.h"

namespace kvforge {

std::vector<RecipeKey> kvpred_recipe_schema();
// `resume`: continue from the newest checkpoint in `out` (the initialisation is recomputed, then replaced by the
// checkpoint's parameters; batches are a pure function of the step).
void run_kvpred_recipe(const Recipe& recipe, bool resume);

}  // namespace kvforge
