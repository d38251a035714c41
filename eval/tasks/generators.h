#pragma once
// One generator per task, registered by name in task.cpp. Each receives a spec that task.cpp has
// validated and an Rng seeded for this sample, draws all content first and sizes the haystack last, so
// the token counter never changes which random numbers a sample gets.
#include "eval/tasks/rng.h"
#include "eval/tasks/task.h"

namespace kvforge::tasks {

using Generator = Sample (*)(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens);

Sample make_passkey(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens);
Sample make_niah_single(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens);
Sample make_niah_multikey(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens);
Sample make_niah_multivalue(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens);
Sample make_niah_multiquery(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens);
Sample make_variable_tracking(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens);
Sample make_kv_retrieval(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens);
Sample make_arithmetic(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens);

}  // namespace kvforge::tasks
