#pragma once
// `kvforge train` with method: cskv — low-rank K/V factors initialised from calibration statistics (svd, asvd or
// whiten), trained on the layer-wise reconstruction loss (optionally quantization-aware), exported as the
// artifact the cskv policy reads, next to the untrained initialisation for comparison.
#include <vector>

#include "cli/recipe.h"

namespace kvforge {

std::vector<RecipeKey> cskv_recipe_schema();
// `resume`: continue training from the newest checkpoint in `out` (the initialisation is recomputed, then replaced
// by the checkpoint's factors; batches are a pure function of the step).
void run_cskv_recipe(const Recipe& recipe, bool resume);

}  // namespace kvforge
