// kvforge export: an artifact in another tool's format. Today: a head artifact (rlkv, duo) as DuoAttention's
// full_attention_heads.tsv, which kvpress and LServe read.
#include <iostream>

#include "checkpoints/artifact.h"
#include "cli/commands.h"
#include "policies/heads.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"

namespace kvforge {
namespace {

struct ExportArgs {
  std::string artifact, format = "duo-tsv", out;
};

void run_export_command(const ExportArgs& args) {
  if (args.format != "duo-tsv") fail_input("--format", args.format, "expected duo-tsv");
  const std::string out = args.out.empty() ? "full_attention_heads.tsv" : args.out;
  check_output_file(out, "command line", "--out");
  const Artifact artifact = read_artifact(args.artifact);
  if (artifact.method != kRlkvMethod && artifact.method != kDuoMethod)
    fail_input(args.artifact, "__metadata__.kvforge.method",
               "duo-tsv holds KV-head gates; expected an rlkv or duo artifact, got '" + artifact.method + "'");
  const at::Tensor& gates = artifact.tensors.at("gates");
  write_text_atomically(out, gates_to_tsv(gates));
  std::cout << out << ": " << gates.size(0) << " layers × " << gates.size(1) << " KV heads\n";
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  CLI::App* command = app.add_subcommand("export", "Write an artifact in another tool's format");
  command->add_option("artifact", args->artifact, "artifact file from kvforge train")->required();
  command->add_option("--format", args->format, "duo-tsv: DuoAttention's full_attention_heads.tsv");
  command->add_option("--out", args->out, "output file (default full_attention_heads.tsv)");
  command->callback([args] { run_export_command(*args); });
}

}  // namespace kvforge
