// The kvforge binary: one CLI11 app, one subcommand per job.
#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <iostream>

#include "cli/commands.h"
#include "runtime/input_error.h"

int main(int argc, char** argv) {
  // cuDNN's fused attention builds a plan for every new shape (40-90 ms each on an H100), and prompts and training
  // batches change length every step: with it, time to first token swung 5-20x between cells of one eval. Flash
  // (causal) and memory-efficient (masked) attention run any shape at once.
  at::globalContext().setSDPUseCuDNN(false);
  CLI::App app{"kvforge: train, export and evaluate KV-cache compression for Llama-family models"};
  app.require_subcommand(1);
  kvforge::add_bench_command(app);
  kvforge::add_eval_command(app);
  kvforge::add_export_command(app);
  kvforge::add_generate_command(app);
  kvforge::add_inspect_command(app);
  kvforge::add_pretrain_command(app);
  kvforge::add_tokenize_command(app);
  kvforge::add_train_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help prints and succeeds; an unknown flag or a value of the wrong type is bad input, exit 2 like the rest.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const kvforge::InputError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
