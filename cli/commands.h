#pragma once
// Subcommands of the kvforge binary; each registers itself on the CLI11 app.
#include <CLI/CLI.hpp>

namespace kvforge {

void add_bench_command(CLI::App& app);
void add_gla_bench(CLI::App& bench);       // kvforge bench gla, under `bench`
void add_generate_bench(CLI::App& bench);  // kvforge bench generate, under `bench`
void add_eval_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_pretrain_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_train_command(CLI::App& app);

}  // namespace kvforge
