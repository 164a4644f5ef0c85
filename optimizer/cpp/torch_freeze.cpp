// Freezing a TorchScript module: what `torch.jit.freeze` and
// `torch.jit.optimize_for_inference` do in Python, through libtorch's C++ API,
// which the `tch` crate does not expose. File in, file out, so that no libtorch
// object crosses into Rust: the Rust side loads the result with tch. Also
// scripted modules built in code (parameters, state, TorchScript source), for
// tests and examples, which tch's tracing cannot make (it inlines every
// tensor as a constant).
//
// Built by optimizer/build.rs with the `torch` feature, against the same
// libtorch headers and ABI as tch's own shim.

#include <torch/script.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/fold_conv_bn.h>
#include <torch/csrc/jit/passes/quantization/finalize.h>
#include <torch/csrc/jit/passes/quantization/insert_observers.h>
#include <torch/csrc/jit/passes/quantization/insert_quant_dequant.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// Returned when even the message cannot be allocated; never freed.
char kOutOfMemory[] = "out of memory";

char* copy_message(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out == nullptr) {
    return kOutOfMemory;
  }
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

// libtorch's messages end with a C++ backtrace; the first lines say why.
char* error_message(const std::exception& e) {
  std::string what(e.what());
  const auto cut = what.find("\nException raised from");
  return copy_message(cut == std::string::npos ? what : what.substr(0, cut));
}

// The module at `in_path`, on the CPU whatever device it was saved from (the
// search loads results on its own device), in eval mode and frozen:
// parameters and attributes inlined as constants, `forward` and every method
// of `preserved` that it has kept callable. `keep` gets those methods.
torch::jit::Module load_frozen(const char* in_path, const char* const* preserved,
                               size_t n_preserved, std::vector<std::string>& keep) {
  torch::jit::Module module = torch::jit::load(std::string(in_path), torch::kCPU);
  module.eval();
  for (size_t i = 0; i < n_preserved; ++i) {
    std::string name(preserved[i]);
    if (module.find_method(name).has_value()) {
      keep.push_back(name);
    }
  }
  return torch::jit::freeze(module, keep, /*optimize_numerics=*/true);
}

// Saves `module` to `out_path` and loads it back: what cannot be loaded back
// is no artifact. On failure no file is left, and the message says which
// step (`what`) made it.
void save_checked(torch::jit::Module& module, const char* out_path, const std::string& what) {
  try {
    module.save(std::string(out_path));
    torch::jit::load(std::string(out_path), torch::kCPU);
  } catch (const std::exception& e) {
    std::remove(out_path);
    throw std::runtime_error(
        what + " produced a module that libtorch cannot save and load back: " + e.what());
  }
}

// `weight` (2-D float) quantized to int8 per output channel, symmetric,
// and prepacked for fbgemm with `bias` (quantized::linear_prepack).
c10::IValue prepack_linear(at::Tensor weight, std::optional<at::Tensor> bias) {
  static auto prepack = c10::Dispatcher::singleton().findSchemaOrThrow(
      "quantized::linear_prepack", "");
  weight = weight.contiguous();
  at::Tensor scales =
      (weight.abs().amax({1}) / 127.0).clamp_min(1e-12).to(at::kDouble);
  at::Tensor zero_points = at::zeros({weight.size(0)}, at::kLong);
  at::Tensor qweight =
      at::quantize_per_channel(weight, scales, zero_points, 0, at::kQInt8);
  torch::jit::Stack stack;
  stack.emplace_back(qweight);
  stack.emplace_back(bias.has_value() ? c10::IValue(bias->contiguous()) : c10::IValue());
  prepack.callBoxed(&stack);
  return stack.at(0);
}

// The dynamic INT8 form of one `aten::lstm`/`aten::gru` (`.input`
// overload) whose weights are constants: its flat weight list regrouped
// per layer and direction into cell params (int8 weights prepacked,
// float biases), run by `quantized::quantized_lstm`/`quantized_gru`.
// Returns false, changing nothing, when the node is not of that form.
bool quantize_rnn(torch::jit::Module& module, torch::jit::Graph& graph,
                  torch::jit::Node* n, bool lstm, bool reduce_range,
                  size_t index) {
  // input, hx, params, has_biases, num_layers, dropout, train,
  // bidirectional, batch_first
  if (n->inputs().size() != 9) return false;
  auto params = torch::jit::toIValue(n->input(2));
  auto has_biases = torch::jit::toIValue(n->input(3));
  if (!params || !params->isTensorList() || !has_biases || !has_biases->isBool()) {
    return false;
  }
  auto tensors = params->toTensorVector();
  const size_t per = has_biases->toBool() ? 4 : 2;
  if (tensors.empty() || tensors.size() % per != 0) return false;
  static auto make_cell = c10::Dispatcher::singleton().findSchemaOrThrow(
      "quantized::make_quantized_cell_params_dynamic", "");
  c10::impl::GenericList cells(c10::AnyType::get());
  c10::TypePtr cell_type;
  for (size_t i = 0; i < tensors.size(); i += per) {
    const at::Tensor& w_ih = tensors[i];
    const at::Tensor& w_hh = tensors[i + 1];
    if (w_ih.dim() != 2 || w_hh.dim() != 2 || w_ih.scalar_type() != at::kFloat) {
      return false;
    }
    at::Tensor b_ih = per == 4 ? tensors[i + 2] : at::zeros({w_ih.size(0)});
    at::Tensor b_hh = per == 4 ? tensors[i + 3] : at::zeros({w_hh.size(0)});
    torch::jit::Stack stack;
    // The dynamic cell adds the biases packed with the weights (as
    // torch.ao's dynamic LSTM packs them); they are given again as plain
    // tensors, which the cell keeps for its accessors.
    stack.emplace_back(prepack_linear(w_ih, b_ih));
    stack.emplace_back(prepack_linear(w_hh, b_hh));
    stack.emplace_back(b_ih.contiguous());
    stack.emplace_back(b_hh.contiguous());
    stack.emplace_back(reduce_range);
    make_cell.callBoxed(&stack);
    cell_type = stack.at(0).type();
    cells.push_back(stack.at(0));
  }
  auto list_type = c10::ListType::create(cell_type);
  c10::impl::GenericList typed(cell_type);
  for (const auto& c : cells) typed.push_back(c);
  const std::string attr =
      std::string("_whet_int8_") + (lstm ? "lstm_" : "gru_") + std::to_string(index);
  module.register_attribute(attr, list_type, c10::IValue(typed));
  torch::jit::WithInsertPoint guard(n);
  torch::jit::Value* packed = graph.insertGetAttr(graph.inputs().at(0), attr);
  torch::jit::Value* dtype = graph.insertConstant(c10::IValue(static_cast<int64_t>(at::kQInt8)));
  torch::jit::Value* use_dynamic = graph.insertConstant(true);
  const auto kind = c10::Symbol::fromQualString(
      lstm ? "aten::quantized_lstm" : "aten::quantized_gru");
  std::vector<torch::jit::Value*> inputs = {n->input(0), n->input(1), packed};
  for (size_t i = 3; i < 9; ++i) inputs.push_back(n->input(i));
  if (lstm) {
    // quantized_lstm takes dtype and use_dynamic (keyword-only).
    inputs.push_back(dtype);
    inputs.push_back(use_dynamic);
  }
  torch::jit::Node* q = graph.create(kind, inputs, n->outputs().size());
  q->insertBefore(n);
  for (size_t i = 0; i < n->outputs().size(); ++i) {
    q->output(i)->setType(n->output(i)->type());
    n->output(i)->replaceAllUsesWith(q->output(i));
  }
  // The node must resolve to an operator, or the module would fail only
  // when run: check now.
  if (q->maybeOperator() == nullptr) {
    for (size_t i = 0; i < n->outputs().size(); ++i) {
      q->output(i)->replaceAllUsesWith(n->output(i));
    }
    q->destroy();
    return false;
  }
  n->destroy();
  return true;
}

// An observer module for libtorch's graph-mode quantization passes,
// scripted here because torch.ao's observers are Python. The passes read
// `dtype`, `qscheme` and (per channel) `ch_axis`, call `forward` on each
// observed tensor during calibration, then `calculate_qparams` for
// (scale, zero_point). Activations: per tensor, affine, unsigned, over
// the running min and max (the range always holds 0, so zero is exact);
// `quant_max` 127 keeps them to 7 bits for CPUs without VNNI. Weights:
// per output channel (axis 0), symmetric int8 in [-127, 127].
torch::jit::Module make_observer(bool weight, bool reduce_range) {
  torch::jit::Module m(weight ? "WhetWeightObserver" : "WhetActivationObserver");
  const auto as_int = [](int64_t v) { return c10::IValue(v); };
  m.register_attribute("dtype", c10::IntType::get(),
                       as_int(static_cast<int64_t>(weight ? at::kQInt8 : at::kQUInt8)));
  m.register_attribute(
      "qscheme", c10::IntType::get(),
      as_int(static_cast<int64_t>(weight ? at::kPerChannelSymmetric : at::kPerTensorAffine)));
  m.register_attribute("ch_axis", c10::IntType::get(), as_int(0));
  m.register_attribute("quant_max", c10::IntType::get(),
                       as_int(weight ? 127 : (reduce_range ? 127 : 255)));
  const double inf = std::numeric_limits<double>::infinity();
  m.register_attribute("min_val", c10::TensorType::get(), at::full({1}, inf));
  m.register_attribute("max_val", c10::TensorType::get(), at::full({1}, -inf));
  if (weight) {
    m.define(R"(
def forward(self, x):
    v = x.detach().float().flatten(1)
    self.min_val = torch.amin(v, 1)
    self.max_val = torch.amax(v, 1)
    return x

def calculate_qparams(self):
    top = torch.maximum(-self.min_val, self.max_val)
    scale = torch.clamp(top / float(self.quant_max), min=1e-12)
    return scale, torch.zeros_like(scale).long()
)");
  } else {
    m.define(R"(
def forward(self, x):
    if x.numel() > 0:
        v = x.detach().float()
        self.min_val = torch.minimum(self.min_val, torch.min(v).reshape([1]))
        self.max_val = torch.maximum(self.max_val, torch.max(v).reshape([1]))
    return x

def calculate_qparams(self):
    lo = torch.clamp(self.min_val, max=0.0)
    hi = torch.clamp(self.max_val, min=0.0)
    # Never observed (no calibration reached it): a unit range.
    seen = bool((self.min_val <= self.max_val).all())
    if not seen:
        lo = torch.zeros_like(lo)
        hi = torch.ones_like(hi)
    scale = torch.clamp((hi - lo) / float(self.quant_max), min=1e-8)
    zero_point = torch.clamp(torch.round(-lo / scale), 0, self.quant_max).long()
    return scale, zero_point
)");
  }
  return m;
}

// The number of nodes of `graph` (and its blocks) whose kind is in the
// `quantized` namespace: the layers that run as INT8 kernels.
size_t count_quantized(torch::jit::Block* block) {
  size_t n = 0;
  for (torch::jit::Node* node : block->nodes()) {
    if (std::string(node->kind().ns().toUnqualString()) == "quantized") ++n;
    for (torch::jit::Block* b : node->blocks()) n += count_quantized(b);
  }
  return n;
}

}  // namespace

extern "C" {

// Loads the module at `in_path`, switches it to eval mode, freezes it
// (parameters and attributes inlined as constants, `forward` and every
// method named in `preserved` kept callable), optionally runs
// optimize_for_inference on it, and saves it to `out_path`.
// Methods in `preserved` that the module does not have are skipped.
// Returns NULL on success, or a malloc'd message (free it with
// whet_torch_free_message).
char* whet_torch_freeze(const char* in_path, const char* out_path,
                        const char* const* preserved, size_t n_preserved,
                        int optimize) {
  try {
    std::vector<std::string> keep;
    torch::jit::Module frozen = load_frozen(in_path, preserved, n_preserved, keep);
    if (optimize != 0) {
      frozen = torch::jit::optimize_for_inference(frozen, keep);
    }
    // optimize_for_inference bakes convolutions into prepacked MKL-DNN
    // objects, which save but do not load ("required keyword attribute
    // 'value' is undefined"): checked here, where the message can say which
    // step made it.
    save_checked(frozen, out_path, optimize != 0 ? "optimize_for_inference" : "freezing");
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e);
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

// Dynamic INT8 of a module's linear, LSTM and GRU layers, as torch.ao's
// dynamic quantization makes them, without Python: the module is loaded, put in eval
// mode and frozen (so that weights are constants of `forward`), then every
// `aten::linear` of `forward` whose weight is a constant 2-D float tensor
// gets that weight quantized to int8 per output channel (symmetric) and
// prepacked for fbgemm (`quantized::linear_prepack`, kept as an attribute of
// the module), and runs as `quantized::linear_dynamic` (activations
// quantized at run time; `reduce_range` keeps them to 7 bits, for CPUs
// without VNNI); `aten::lstm`/`aten::gru` with constant weights likewise
// run as `quantized::quantized_lstm`/`quantized_gru`. Saved to `out_path`
// and loaded back. `*quantized` gets the number of layers rewritten; none is
// an error.
char* whet_torch_dynamic_int8(const char* in_path, const char* out_path,
                              const char* const* preserved, size_t n_preserved,
                              int reduce_range, size_t* quantized) {
  try {
    std::vector<std::string> keep;
    torch::jit::Module frozen = load_frozen(in_path, preserved, n_preserved, keep);
    auto graph = frozen.get_method("forward").graph();
    const auto linear = c10::Symbol::fromQualString("aten::linear");
    const auto dynamic = c10::Symbol::fromQualString("quantized::linear_dynamic");
    const auto lstm = c10::Symbol::fromQualString("aten::lstm");
    const auto gru = c10::Symbol::fromQualString("aten::gru");
    std::vector<torch::jit::Node*> nodes;
    std::vector<torch::jit::Node*> rnns;
    for (torch::jit::Node* n : graph->nodes()) {
      if (n->kind() == linear) {
        nodes.push_back(n);
      } else if (n->kind() == lstm || n->kind() == gru) {
        rnns.push_back(n);
      }
    }
    size_t done = 0;
    for (torch::jit::Node* n : nodes) {
      auto w = torch::jit::toIValue(n->input(1));
      if (!w || !w->isTensor()) continue;
      at::Tensor weight = w->toTensor();
      if (weight.dim() != 2 || weight.scalar_type() != at::kFloat) continue;
      std::optional<at::Tensor> bias;
      if (n->inputs().size() > 2) {
        auto b = torch::jit::toIValue(n->input(2));
        if (!b) continue;  // a bias computed at run time: leave the layer
        if (b->isTensor()) bias = b->toTensor().contiguous();
      }
      c10::IValue packed = prepack_linear(weight, bias);
      const std::string attr = "_whet_int8_linear_" + std::to_string(done);
      frozen.register_attribute(attr, packed.type(), packed);
      torch::jit::WithInsertPoint guard(n);
      torch::jit::Value* params =
          graph->insertGetAttr(graph->inputs().at(0), attr);
      torch::jit::Value* out = graph->insert(
          dynamic, {n->input(0), params, static_cast<bool>(reduce_range != 0)});
      out->setType(n->output()->type());
      n->output()->replaceAllUsesWith(out);
      n->destroy();
      ++done;
    }
    for (torch::jit::Node* n : rnns) {
      if (quantize_rnn(frozen, *graph, n, n->kind() == lstm, reduce_range != 0, done)) {
        ++done;
      }
    }
    if (done == 0) {
      throw std::runtime_error(
          "no linear, LSTM or GRU layer with constant float weights to quantize");
    }
    *quantized = done;
    save_checked(frozen, out_path, "dynamic INT8");
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e);
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

// Static INT8, step one, as torch.ao's prepare_jit: the module is loaded
// in eval mode, convolutions and their batch norm submodules folded, and
// an observer inserted (libtorch's InsertObservers) for every tensor a
// convolution or linear layer reads or writes: activations per tensor,
// weights per output channel (see make_observer). Saved to `out_path`
// unfrozen: the caller runs its calibration set through `forward` and saves
// the module again for whet_torch_static_int8_convert.
char* whet_torch_static_int8_prepare(const char* in_path, const char* out_path,
                                     int reduce_range) {
  try {
    torch::jit::Module module = torch::jit::load(std::string(in_path), torch::kCPU);
    module.eval();
    module = torch::jit::FoldConvBatchNorm(module);
    torch::jit::QConfigDict qconfig;
    qconfig.emplace("", std::make_tuple(make_observer(false, reduce_range != 0),
                                        make_observer(true, reduce_range != 0)));
    torch::jit::Module observed = torch::jit::InsertObservers(
        module, "forward", qconfig, /*inplace=*/false, torch::jit::QuantType::STATIC);
    observed.save(std::string(out_path));
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e);
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

// Static INT8, step two, as torch.ao's convert_jit: the calibrated module
// at `in_path` gets quantize/dequantize pairs from its observers' ranges
// (InsertQuantDeQuant), then libtorch's Finalize fuses them with the
// layers into fbgemm kernels (quantized::conv2d, conv2d_relu, linear, …),
// prepacks the weights and freezes the module, keeping `preserved`.
// Saved to `out_path` and loaded back. `*quantized` gets the number of
// quantized kernels; none is an error.
char* whet_torch_static_int8_convert(const char* in_path, const char* out_path,
                                     const char* const* preserved, size_t n_preserved,
                                     size_t* quantized) {
  try {
    torch::jit::Module module = torch::jit::load(std::string(in_path), torch::kCPU);
    module.eval();
    std::vector<std::string> keep;
    for (size_t i = 0; i < n_preserved; ++i) {
      std::string name(preserved[i]);
      if (module.find_method(name).has_value()) keep.push_back(name);
    }
    module = torch::jit::InsertQuantDeQuant(module, "forward", /*inplace=*/false,
                                            /*debug=*/false, torch::jit::QuantType::STATIC);
    torch::jit::Module frozen =
        torch::jit::Finalize(module, torch::jit::QuantType::STATIC, keep);
    const size_t n = count_quantized(frozen.get_method("forward").graph()->block());
    if (n == 0) {
      throw std::runtime_error(
          "no convolution or linear layer became an INT8 kernel (nothing to quantize statically)");
    }
    *quantized = n;
    save_checked(frozen, out_path, "static INT8");
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e);
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

void whet_torch_free_message(char* message) {
  if (message != kOutOfMemory) {
    std::free(message);
  }
}

// Builds a scripted TorchScript module in code, as `torch.jit.script` of a
// small nn.Module would: `n` float tensors registered under `names` (as
// parameters when `kinds[i]` is 0, as plain tensor attributes — state a
// method may reassign — when 1), the methods of `source` (TorchScript
// source, `def forward(self, …)` and any others) defined on it, saved to
// `out_path`. Returns NULL on success, or a malloc'd message.
char* whet_torch_script_module(const char* out_path, const char* source,
                               const char* const* names, const int* kinds,
                               const float* const* values,
                               const int64_t* const* shapes,
                               const size_t* ranks, size_t n) {
  try {
    torch::jit::Module module("WhetModule");
    for (size_t i = 0; i < n; ++i) {
      std::vector<int64_t> shape(shapes[i], shapes[i] + ranks[i]);
      int64_t numel = 1;
      for (int64_t d : shape) numel *= d;
      at::Tensor t =
          torch::from_blob(const_cast<float*>(values[i]), {numel},
                           torch::TensorOptions().dtype(torch::kFloat32))
              .clone()
              .reshape(shape);
      if (kinds[i] == 0) {
        module.register_parameter(names[i], t, /*is_buffer=*/false);
      } else {
        module.register_attribute(names[i], c10::TensorType::get(), t);
      }
    }
    module.define(std::string(source));
    module.save(std::string(out_path));
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e);
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

}  // extern "C"
