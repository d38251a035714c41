// kvforge export: an artifact in another tool's own file (see policies/peer_artifacts.h): a head artifact (rlkv,
// duo) as DuoAttention's full_attention_heads.tsv (which kvpress and LServe read too) or RLKV's adapter_weights.tsv,
// a PrefixKV calibration as PrefixKV's per-ratio budget files.
#include <iostream>

#include "checkpoints/artifact.h"
#include "cli/commands.h"
#include "policies/heads.h"
#include "policies/peer_artifacts.h"
#include "policies/prefixkv.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"

namespace kvforge {
namespace {

struct ExportArgs {
  std::string artifact, format = "duo-tsv", out, name;
};

void export_gates(const ExportArgs& args, const Artifact& artifact, const std::string& out) {
  if (artifact.method != kRlkvMethod && artifact.method != kDuoMethod)
    fail_input(args.artifact, "__metadata__.kvforge.method",
               args.format + " holds KV-head gates; expected an rlkv or duo artifact, got '" + artifact.method + "'");
  const at::Tensor& gates = artifact.tensors.at("gates");
  write_text_atomically(out, gates_to_tsv(gates));
  std::cout << out << ": " << gates.size(0) << " layers × " << gates.size(1) << " KV heads\n";
}

void export_prefixkv(const ExportArgs& args, const Artifact& artifact, const std::string& folder) {
  if (artifact.method != kPrefixKvMethod)
    fail_input(args.artifact, "__metadata__.kvforge.method",
               "prefixkv-json holds per-layer budgets; expected a prefixkv artifact, got '" + artifact.method + "'");
  make_output_folder(folder, "command line", "--out");
  for (const auto& [name, text] :
       prefixkv_budget_files(artifact, args.name.empty() ? artifact.model.model_type : args.name)) {
    write_text_atomically(folder + "/" + name, text + "\n");
    std::cout << folder << "/" << name << ": " << artifact.model.num_layers << " layers\n";
  }
}

// Each format, the file (or, for one per budget, the folder) it writes by default.
struct ExportFormat {
  const char* name;
  const char* default_out;
  bool folder;
};
constexpr ExportFormat kFormats[] = {{"duo-tsv", "full_attention_heads.tsv", false},
                                     {"rlkv-tsv", "adapter_weights.tsv", false},
                                     {"prefixkv-json", "confs", true}};

void run_export_command(const ExportArgs& args) {
  const ExportFormat* format = nullptr;
  for (const ExportFormat& known : kFormats)
    if (args.format == known.name) format = &known;
  if (format == nullptr)
    fail_input("command line", "--format", "expected duo-tsv, rlkv-tsv or prefixkv-json, got '" + args.format + "'");
  // The output is checked before the artifact is read, so a bad --out fails at once.
  const std::string out = args.out.empty() ? format->default_out : args.out;
  if (format->folder) {
    check_output_folder(out, "command line", "--out");
  } else {
    check_output_file(out, "command line", "--out");
  }
  const Artifact artifact = read_artifact(args.artifact);
  if (format->folder) return export_prefixkv(args, artifact, out);
  export_gates(args, artifact, out);
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  CLI::App* command = app.add_subcommand("export", "Write an artifact in another tool's format");
  command->add_option("artifact", args->artifact, "artifact file from kvforge train")->required();
  command->add_option("--format", args->format,
                      "duo-tsv: DuoAttention's full_attention_heads.tsv; rlkv-tsv: RLKV's adapter_weights.tsv; "
                      "prefixkv-json: PrefixKV's prefixkv_<name>_<ratio>.json, one per calibrated budget");
  command->add_option("--out", args->out,
                      "output file (default full_attention_heads.tsv / adapter_weights.tsv), or folder for "
                      "prefixkv-json (default confs)");
  command->add_option("--name", args->name, "prefixkv-json: the model name in the file names (default: model_type)");
  command->callback([args] { run_export_command(*args); });
}

}  // namespace kvforge
