// The inference backends behind a runtime: each runs the bundle's graphs on named host tensors.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bundle.h"
#include "error.h"
#include "tgir.h"

namespace tgir {

/// A host tensor: dtype as in the manifest ("float32" or "int64"), shape, contiguous bytes.
struct Tensor {
  std::string dtype = "float32";
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;

  size_t numel() const {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  }
  template <typename T>
  T* data() { return reinterpret_cast<T*>(bytes.data()); }
  template <typename T>
  const T* data() const { return reinterpret_cast<const T*>(bytes.data()); }
  /// Shapes come from the manifest and from graph outputs, so the byte count is overflow-checked: a
  /// wrapped product would allocate a small buffer that the graphs then write past.
  void resize(std::string type, std::vector<int64_t> dims) {
    const size_t item = type == "int64" ? 8 : 4;
    size_t n = item;
    for (int64_t d : dims) {
      if (d < 0 || (d > 0 && n > SIZE_MAX / static_cast<size_t>(d)))
        fail(TGIR_ERR_OUT_OF_MEMORY, "a tensor of " + shape_string(dims) + " " + type + " elements is too large");
      n *= static_cast<size_t>(d);
    }
    bytes.resize(n);
    dtype = std::move(type);
    shape = std::move(dims);
  }
  static std::string shape_string(const std::vector<int64_t>& dims) {
    std::string s = "[";
    for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + "]";
  }
};

/// Runs graphs. Implementations are not thread-safe; clone() gives an instance for another thread
/// that shares the loaded weights.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;    // "aoti", "tensorrt"
  virtual std::string device() const = 0;  // "cpu", "cuda:0"
  virtual std::string precision() const = 0;
  /// Run `graph` on inputs in contract order; fills outputs in contract order.
  virtual void run(const std::string& graph, const std::vector<const Tensor*>& inputs,
                   std::vector<Tensor>& outputs) = 0;
  virtual std::unique_ptr<Backend> clone() const = 0;
};

/// AOTInductor packages from the bundle's aoti/ folder (`tgir-export aoti`). TGIR_ERR_UNSUPPORTED when
/// this library was built without AOTI or the bundle has no packages.
std::unique_ptr<Backend> make_aoti_backend(const Bundle& bundle, const tgir_runtime_options& options);

/// TensorRT engines named by the manifest. TGIR_ERR_UNSUPPORTED when built without TensorRT.
std::unique_ptr<Backend> make_tensorrt_backend(const Bundle& bundle, const tgir_runtime_options& options);

/// Which backends this library was built with (for tgir_version()).
bool aoti_available();
bool tensorrt_available();

}  // namespace tgir
