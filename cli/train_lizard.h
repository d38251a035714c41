#pragma once
// `kvforge train` with method: lizard — stage 1 of Lizard (or the LoLCATs-style baseline): attention transfer of
// feature maps, gates and sink logits against the frozen model's softmax, exported as the artifact the lizard policy
// reads. Stage 2 (LoRA fine-tuning) is not built yet.
#include <vector>

#include "cli/recipe.h"

namespace kvforge {

std::vector<RecipeKey> lizard_recipe_schema();
void run_lizard_recipe(const Recipe& recipe, bool resume);

}  // namespace kvforge
