#pragma once
// `kvforge train` with method: rlkv — learned KV-head gates by GRPO (objective: grpo, RLKV) or by
// DuoAttention's distillation (objective: distill), exported as a head artifact.
#include <vector>

#include "cli/recipe.h"

namespace kvforge {

std::vector<RecipeKey> rlkv_recipe_schema();
// `resume`: continue from the newest checkpoint in `out` (the gates and the step; rollouts are a pure
// function of the step, so the run continues as it would have).
void run_rlkv_recipe(const Recipe& recipe, bool resume);

}  // namespace kvforge
