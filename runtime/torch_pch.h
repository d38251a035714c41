// Precompiled header for every torch-using target: the narrow LibTorch headers kvforge needs
// (not <torch/torch.h>, which drags in optimizers, data loaders and serialization).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <torch/utils.h>
