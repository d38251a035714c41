#pragma once
// What a learned policy parses out of an artifact (factors, weights), parsed once per artifact and shared by every
// cell that evaluates it; an entry goes when its artifact does.
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "checkpoints/artifact.h"

namespace kvforge {

// `parse()` -> std::shared_ptr<const Parsed>, called only the first time `artifact` is seen.
template <typename Parsed, typename Parse>
std::shared_ptr<const Parsed> parsed_once(const std::shared_ptr<const Artifact>& artifact, Parse parse) {
  static std::mutex mutex;
  static std::map<const Artifact*, std::pair<std::weak_ptr<const Artifact>, std::shared_ptr<const Parsed>>> parsed;
  std::lock_guard<std::mutex> lock(mutex);
  auto found = parsed.find(artifact.get());
  if (found != parsed.end() && found->second.first.lock() == artifact) return found->second.second;
  for (auto entry = parsed.begin(); entry != parsed.end();)  // artifacts gone since: free what was parsed from them
    entry = entry->second.first.expired() ? parsed.erase(entry) : std::next(entry);
  std::shared_ptr<const Parsed> result = parse();
  parsed[artifact.get()] = {artifact, result};
  return result;
}

}  // namespace kvforge
