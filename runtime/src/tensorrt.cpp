// TensorRT backend: the bundle's engines (`tgir-export build-engine --backend tensorrt`) through TensorRT's
// runtime API (setInputShape, setTensorAddress, enqueueV3) and the CUDA runtime API. TensorRT >= 10 only:
// 8.x (JetPack 5) has no INT64 tensors (its ONNX parser makes the int64 inputs INT32) and 32-bit Dims, so
// the C runtime does not support it; the Python runner (tgir.runtime.trt) does. The load-time checks mirror
// tgir.runtime.engine_facts: an engine this machine cannot run is refused with a message, not a crash.
#pragma GCC diagnostic push  // TensorRT's inline code warns (deprecated API, unused parameters); ours must not
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "error.h"

#if NV_TENSORRT_MAJOR < 10
#error "libtgir's TensorRT backend needs TensorRT >= 10; with TensorRT 8.x (JetPack 5) use the Python runner"
#endif

namespace tgir {
namespace {

namespace nv = nvinfer1;
using json = nlohmann::json;

const std::string kRebuild = "rebuild them with `tgir-export build-engine --backend tensorrt`";

/// Keeps TensorRT's last error lines: most TensorRT failures (a corrupt plan, a refused shape) are
/// explained only through the logger. TensorRT requires loggers to be thread-safe (clones share one).
class Logger : public nv::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity != Severity::kERROR && severity != Severity::kINTERNAL_ERROR) return;  // as the Python runner
    try {  // a lost log line is better than an exception thrown into TensorRT
      std::lock_guard<std::mutex> lock(mu_);
      errors_.emplace_back(msg ? msg : "");
      if (errors_.size() > 3) errors_.erase(errors_.begin());
      ++count_;
    } catch (...) {}
  }
  size_t mark() const { std::lock_guard<std::mutex> lock(mu_); return count_; }
  /// " (error; error)" for the errors logged since `mark` (the last three at most), or "".
  std::string since(size_t mark) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (size_t i = errors_.size() - std::min(count_ - mark, errors_.size()); i < errors_.size(); ++i)
      out += (out.empty() ? "" : "; ") + errors_[i];
    return out.empty() ? out : " (" + out + ")";
  }
 private:
  mutable std::mutex mu_;
  std::vector<std::string> errors_;
  size_t count_ = 0;
};

void cuda(cudaError_t rc, const std::string& what) {
  if (rc == cudaSuccess) return;
  cudaGetLastError();  // a non-sticky error would otherwise be reported again by the next call
  fail(rc == cudaErrorMemoryAllocation ? TGIR_ERR_OUT_OF_MEMORY : TGIR_ERR_BACKEND,
       "TensorRT backend: CUDA " + what + " failed: " + cudaGetErrorName(rc) + " (" + cudaGetErrorString(rc) + ")");
}

/// Makes the runtime's device current for a scope, then gives the thread its own back: the library must
/// not change the application's current device. `strict` = false in destructors (nothing thrown).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device, bool strict = true) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    const cudaError_t rc = previous_ == device ? cudaSuccess : cudaSetDevice(device);
    if (previous_ == device || rc != cudaSuccess) previous_ = -1;
    if (strict) cuda(rc, "cudaSetDevice(" + std::to_string(device) + ")");
  }
  ~DeviceGuard() { if (previous_ >= 0) cudaSetDevice(previous_); }
 private:
  int previous_ = -1;
};

std::string dims_text(const nv::Dims& dims) {
  std::string out = "[";
  for (int i = 0; i < dims.nbDims; ++i) out += (i ? ", " : "") + std::to_string(dims.d[i]);
  return out + "]";
}
/// Elements of a shape; -1 when a dimension is unknown (data-dependent) or the shape invalid.
int64_t volume(const nv::Dims& dims) {
  int64_t n = dims.nbDims < 0 ? -1 : 1;
  for (int i = 0; i < dims.nbDims && n >= 0; ++i) n = dims.d[i] < 0 ? -1 : n * dims.d[i];
  return n;
}
struct TensorSpec {  // one contract tensor as the engine has it
  std::string name, dtype;
  bool input = false;
  size_t elem = 4;        // bytes per element
  nv::Dims min{}, max{};  // inputs: the range of optimization profile 0
};
struct Engine {
  nv::ICudaEngine* engine = nullptr;
  std::vector<TensorSpec> tensors;  // the contract's order: inputs, then outputs
  size_t inputs = 0;
  bool fixed_batch = false;  // profile min batch == max (DLA, --static-batch): smaller batches are padded
};
/// What all clones share. TensorRT requires the logger to outlive the runtime and the runtime to outlive
/// its engines (destroying it first is undefined behaviour), so one object owns them, in that order.
struct Model {
  Logger logger;
  nv::IRuntime* runtime = nullptr;
  std::map<std::string, Engine> engines;
  int device = 0;
  std::string precision;
  ~Model() {
    DeviceGuard guard(device, false);
    for (auto& kv : engines) delete kv.second.engine;
    delete runtime;
  }
};

/// One graph's execution state in one backend instance (a runtime or one of its clones).
struct Slot {
  int device = 0;
  nv::IExecutionContext* context = nullptr;
  bool allocated = false, graphs_failed = false;
  std::vector<void*> dev, host;  // per tensor, contract order, sized for the largest batch
  std::vector<size_t> capacity;  // their size in bytes
  std::vector<int64_t> state;    // input dims of the context's last plain enqueueV3
  std::map<std::vector<int64_t>, cudaGraphExec_t> graphs;  // by input dims
  std::string note;  // why CUDA graphs were given up for this graph (kept for debugging)
  void free_buffers() noexcept {
    for (void* p : dev) cudaFree(p);
    for (void* p : host) cudaFreeHost(p);
    dev.clear(), host.clear(), capacity.clear();
    allocated = false;
  }
  ~Slot() {
    DeviceGuard guard(device, false);
    for (auto& kv : graphs) cudaGraphExecDestroy(kv.second);
    delete context;  // before its engine: the Model outlives every Slot
    free_buffers();
  }
};

class TensorRtBackend : public Backend {
 public:
  TensorRtBackend(std::shared_ptr<Model> model, bool cuda_graphs) : model_(std::move(model)), graphs_(cuda_graphs) {
    DeviceGuard guard(model_->device);
    for (auto& kv : model_->engines) {
      auto& slot = slots_[kv.first] = std::make_unique<Slot>();
      slot->device = model_->device;
      const size_t mark = model_->logger.mark();
      if (!(slot->context = kv.second.engine->createExecutionContext()))
        fail(TGIR_ERR_OUT_OF_MEMORY, kv.first + ": TensorRT created no execution context" + model_->logger.since(mark));
    }
    // Last: nothing leaks if it fails. Not the legacy default stream, which TensorRT syncs and CUDA can't capture.
    cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  }
  ~TensorRtBackend() override {
    DeviceGuard guard(model_->device, false);
    cudaStreamSynchronize(stream_);  // nothing may still use the buffers slots_ frees next
    slots_.clear();
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "tensorrt"; }
  std::string device() const override { return "cuda:" + std::to_string(model_->device); }
  std::string precision() const override { return model_->precision; }
  std::unique_ptr<Backend> clone() const override { return std::make_unique<TensorRtBackend>(model_, graphs_); }

  void run(const std::string& name, const std::vector<const Tensor*>& inputs, std::vector<Tensor>& outputs) override {
    auto it = slots_.find(name);
    if (it == slots_.end()) fail(TGIR_ERR_BAD_BUNDLE, "TensorRT backend: the bundle has no engine for '" + name + "'");
    const Engine& e = model_->engines.at(name);
    Slot& s = *it->second;
    DeviceGuard guard(model_->device);
    try {
      const int64_t batch = check_inputs(name, e, inputs), rows = e.fixed_batch ? e.tensors[0].max.d[0] : batch;
      if (!s.allocated) allocate(name, e, s);
      execute(name, s, stage_inputs(name, e, s, inputs, batch, rows));
      fetch_outputs(name, e, s, batch, rows, outputs);
    } catch (...) {
      cudaStreamSynchronize(stream_);  // copies in flight must not meet the next run's staging
      throw;
    }
  }

 private:
  /// The batch, after checking the inputs against the contract and the engine's profile.
  int64_t check_inputs(const std::string& name, const Engine& e, const std::vector<const Tensor*>& inputs) const {
    if (inputs.size() != e.inputs || inputs[0]->shape.empty() || inputs[0]->shape[0] < 1)
      fail(TGIR_ERR_INTERNAL, name + ": wrong number of inputs or an empty batch");
    const int64_t batch = inputs[0]->shape[0];
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& t = *inputs[i];
      const TensorSpec& spec = e.tensors[i];  // inputs come first, in the same order
      if (t.dtype != spec.dtype || static_cast<int>(t.shape.size()) != spec.max.nbDims || t.shape[0] != batch)
        fail(TGIR_ERR_INTERNAL, name + ": input " + spec.name + " differs from the contract in dtype, rank or batch");
      for (int d = 0; d < spec.max.nbDims; ++d)
        if ((t.shape[d] < spec.min.d[d] && !(d == 0 && e.fixed_batch)) || t.shape[d] > spec.max.d[d])
          fail(TGIR_ERR_INVALID_ARGUMENT, name + ": input " + spec.name + " is outside the engine's shapes " +
                                              dims_text(spec.min) + " .. " + dims_text(spec.max));
    }
    return batch;
  }

  /// Device and pinned host buffers for the largest shapes, bound once: fixed addresses let a captured
  /// CUDA graph be replayed. Output sizes come from TensorRT's shape inference at the profile's maxima.
  void allocate(const std::string& name, const Engine& e, Slot& s) {
    s.free_buffers();  // an earlier attempt may have failed half-way
    s.state.clear();   // the shapes set here are not those of any run
    for (size_t i = 0; i < e.inputs; ++i)
      if (!s.context->setInputShape(e.tensors[i].name.c_str(), e.tensors[i].max))
        fail(TGIR_ERR_BACKEND, name + ": TensorRT refused the profile's maximum shape for " + e.tensors[i].name);
    for (const TensorSpec& spec : e.tensors) {
      const int64_t n = volume(spec.input ? spec.max : s.context->getTensorShape(spec.name.c_str()));
      if (n < 0) fail(TGIR_ERR_BAD_BUNDLE, name + ": output " + spec.name + " has a data-dependent shape");
      const size_t bytes = std::max<size_t>(static_cast<size_t>(n) * spec.elem, 1);
      s.dev.push_back(nullptr), s.host.push_back(nullptr), s.capacity.push_back(bytes);
      cuda(cudaMalloc(&s.dev.back(), bytes), "cudaMalloc(" + std::to_string(bytes) + ")");  // 256-byte aligned
      cuda(cudaMallocHost(&s.host.back(), bytes), "cudaMallocHost(" + std::to_string(bytes) + ")");
      if (!s.context->setTensorAddress(spec.name.c_str(), s.dev.back()))
        fail(TGIR_ERR_BACKEND, name + ": TensorRT refused the buffer address of " + spec.name);
    }
    s.allocated = true;
  }

  /// Copies the inputs in through pinned memory and sets their shapes; returns all input dims.
  std::vector<int64_t> stage_inputs(const std::string& name, const Engine& e, Slot& s,
                                    const std::vector<const Tensor*>& inputs, int64_t batch, int64_t rows) {
    std::vector<int64_t> key;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& t = *inputs[i];
      const size_t row = t.bytes.size() / static_cast<size_t>(batch), total = row * static_cast<size_t>(rows);
      if (total > s.capacity[i]) fail(TGIR_ERR_INTERNAL, name + ": input " + e.tensors[i].name + " exceeds its buffer");
      auto* host = static_cast<unsigned char*>(s.host[i]);
      std::memcpy(host, t.bytes.data(), t.bytes.size());
      for (int64_t r = batch; r < rows; ++r)  // fixed-batch engine: repeat the last sample, as the Python runner
        std::memcpy(host + r * row, host + (batch - 1) * row, row);
      nv::Dims dims = e.tensors[i].max;
      std::copy(t.shape.begin(), t.shape.end(), dims.d);
      dims.d[0] = rows;
      const size_t mark = model_->logger.mark();
      if (!s.context->setInputShape(e.tensors[i].name.c_str(), dims))
        fail(TGIR_ERR_INVALID_ARGUMENT, name + ": TensorRT refused shape " + dims_text(dims) + " for " +
                                            e.tensors[i].name + model_->logger.since(mark));
      cuda(cudaMemcpyAsync(s.dev[i], host, total, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (input)");
      key.insert(key.end(), dims.d, dims.d + dims.nbDims);
    }
    return key;
  }

  void enqueue(const std::string& name, Slot& s) {
    const size_t mark = model_->logger.mark();
    if (!s.context->enqueueV3(stream_))
      fail(TGIR_ERR_BACKEND, "TensorRT backend: running " + name + " failed" + model_->logger.since(mark));
  }
  /// Plain enqueueV3, or with cuda_graphs a CUDA graph per input shape. As trtexec does, a graph is
  /// captured only after a plain run of the same shapes (the first run after a shape change updates
  /// TensorRT's state and loads kernels, which cannot be captured), and it is replayed only while the
  /// context's last plain run had its shapes, so a graph never meets state set up for other shapes.
  void execute(const std::string& name, Slot& s, const std::vector<int64_t>& key) {
    if (!graphs_ || s.graphs_failed || key != s.state) {
      enqueue(name, s);  // first: only a run that worked makes its shapes the context's state
      return void(s.state = key);
    }
    auto it = s.graphs.find(key);
    if (it == s.graphs.end()) {
      cudaGraphExec_t exec = capture(name, s);
      if (!exec) return enqueue(name, s);
      it = s.graphs.emplace(key, exec).first;
    }
    cuda(cudaGraphLaunch(it->second, stream_), "cudaGraphLaunch (" + name + ")");
  }

  /// One enqueueV3 recorded into a graph as NVIDIA's trtexec does (samples/common/sampleDevice.h), or
  /// null. An engine that cannot be captured (weight streaming, some plugins) makes enqueueV3 fail or
  /// invalidates the capture; that graph then runs with plain enqueueV3 from now on, and `note` says why.
  cudaGraphExec_t capture(const std::string& name, Slot& s) {
    const size_t mark = model_->logger.mark();
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    // Thread-local mode: other clones may allocate meanwhile. A begun capture is ended even if enqueueV3 failed.
    const bool began = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
    const bool enqueued = began && s.context->enqueueV3(stream_);
    bool ok = began && cudaStreamEndCapture(stream_, &graph) == cudaSuccess && enqueued && graph;
    ok = ok && cudaGraphInstantiateWithFlags(&exec, graph, 0) == cudaSuccess;
    if (graph) cudaGraphDestroy(graph);
    if (ok) return exec;
    cudaGetLastError();  // capture errors are not sticky: clear them for the calls that follow
    s.graphs_failed = true;
    s.note = name + ": CUDA graph capture failed, running with enqueueV3" + model_->logger.since(mark);
    return nullptr;
  }

  void fetch_outputs(const std::string& name, const Engine& e, Slot& s, int64_t batch, int64_t rows,
                     std::vector<Tensor>& outputs) {
    outputs.resize(e.tensors.size() - e.inputs);
    for (size_t i = e.inputs; i < e.tensors.size(); ++i) {
      const nv::Dims dims = s.context->getTensorShape(e.tensors[i].name.c_str());
      const size_t bytes = static_cast<size_t>(std::max<int64_t>(volume(dims), 0)) * e.tensors[i].elem;
      if (volume(dims) < 0 || bytes > s.capacity[i] || dims.nbDims < 1 || dims.d[0] != rows)
        fail(TGIR_ERR_BACKEND, name + ": output " + e.tensors[i].name + " has shape " + dims_text(dims) +
                                   ", not [" + std::to_string(rows) + ", ...] within its buffer; " + kRebuild);
      cuda(cudaMemcpyAsync(s.host[i], s.dev[i], bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (output)");
      std::vector<int64_t> shape(dims.d, dims.d + dims.nbDims);
      shape[0] = batch;  // rows beyond the batch were padding
      outputs[i - e.inputs].resize(e.tensors[i].dtype, std::move(shape));
    }
    cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (running " + name + ")");
    for (size_t k = 0; k < outputs.size(); ++k)
      std::memcpy(outputs[k].bytes.data(), s.host[e.inputs + k], outputs[k].bytes.size());
  }

  std::shared_ptr<Model> model_;  // declared first: released after slots_ deleted their contexts
  bool graphs_;
  cudaStream_t stream_ = nullptr;
  std::map<std::string, std::unique_ptr<Slot>> slots_;
};

std::string text(const json& facts, const char* key) {  // a fact as the messages show it
  return !facts.contains(key) ? "?" : facts[key].is_string() ? facts[key].get<std::string>() : facts[key].dump();
}
bool flag(const json& facts, const char* key) { return facts.contains(key) && facts[key] == true; }
/// engine_facts.runs_on: the exact version, or for version-compatible plans the same or a newer runtime
/// of the same major, and across majors only 8 -> 9/10, 9 -> 10 and 10 -> 11.
bool runs_on(const std::string& built_text, const std::vector<int>& here, bool compatible) {
  std::vector<int> built{0, 0, 0};
  if (std::sscanf(built_text.c_str(), "%d.%d.%d", &built[0], &built[1], &built[2]) < 2) return false;
  if (!compatible) return built == here;
  const int b = built[0], h = here[0];
  return here >= built && (b == h || (b == 8 && (h == 9 || h == 10)) || (b == 9 && h == 10) || (b == 10 && h == 11));
}

/// engine_facts.require_fresh_engine before TensorRT is touched: engines built from the bundle's ONNX, by a
/// TensorRT the linked one can load, for this GPU's compute capability (another GPU model of the same
/// compute capability is accepted; the Python runner only warns about it).
void check_facts(const Bundle& b, const json& facts, int device) {
  const json built = facts.contains("onnx_sha256") ? facts["onnx_sha256"] : json();
  for (const auto& kv : b.graphs) {
    auto onnx = b.files.find(kv.second.file);
    if (!built.is_object() || !built.contains(kv.first) || onnx == b.files.end() || built[kv.first] != onnx->second)
      fail(TGIR_ERR_BAD_BUNDLE, b.dir + ": the " + kv.first + " engine is stale (built from other ONNX); " + kRebuild);
  }
  int count = 0;
  cuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount (is there a CUDA GPU and driver?)");
  if (device >= count) fail(TGIR_ERR_INVALID_ARGUMENT, "CUDA device " + std::to_string(device) + " does not exist");
  cudaDeviceProp prop;
  cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
  const int lib = getInferLibVersion();  // (MAJOR * 100 + MINOR) * 100 + PATCH
  const std::vector<int> here{lib / 10000, lib / 100 % 100, lib % 100};
  std::string problems;
  if (!runs_on(text(facts, "version"), here, flag(facts, "version_compatible")))
    problems = "built with TensorRT " + text(facts, "version") + (flag(facts, "version_compatible") ? " (version-" :
               " (not version-") + "compatible), and this libtgir runs " + std::to_string(here[0]) + "." +
               std::to_string(here[1]) + "." + std::to_string(here[2]);
  if (text(facts, "compute_capability") != cc)
    problems += (problems.empty() ? "" : "; ") + std::string("built for compute capability ") +
                text(facts, "compute_capability") + ", and this GPU (" + prop.name + ") is " + cc;
  if (!problems.empty())
    fail(TGIR_ERR_VERSION_MISMATCH, b.dir + ": the TensorRT engines were " + problems + "; " + kRebuild + " here");
  if (flag(facts, "exclude_lean_runtime"))
    fail(TGIR_ERR_UNSUPPORTED, b.dir + ": the C runtime cannot load a separate lean runtime for engines built with "
                                       "--exclude-lean-runtime; " + kRebuild + " without that flag");
}

/// The engine's I/O tensors must be the contract's: names, directions, dtypes, ranks.
void check_contract(Engine& e, const GraphInfo& g, const std::string& path) {
  const size_t count = g.inputs.size() + g.outputs.size();
  if (static_cast<size_t>(e.engine->getNbIOTensors()) != count || e.engine->getNbOptimizationProfiles() < 1 ||
      g.inputs.empty())
    fail(TGIR_ERR_BAD_BUNDLE, path + ": the engine's I/O tensors differ from the manifest's; " + kRebuild);
  for (size_t i = 0; i < count; ++i) {
    const bool input = i < g.inputs.size();
    const TensorInfo& t = input ? g.inputs[i] : g.outputs[i - g.inputs.size()];
    const char* n = t.name.c_str();
    if (e.engine->getTensorIOMode(n) != (input ? nv::TensorIOMode::kINPUT : nv::TensorIOMode::kOUTPUT))
      fail(TGIR_ERR_BAD_BUNDLE, path + ": no engine " + (input ? "input " : "output ") + t.name + "; " + kRebuild);
    if (t.dtype != "float32" && t.dtype != "int64")
      fail(TGIR_ERR_UNSUPPORTED, path + ": tensor " + t.name + " is " + t.dtype + "; libtgir passes float32/int64");
    // Strongly typed engines keep the contract's I/O types: an FP16 engine still takes and gives float32.
    const int type = static_cast<int>(e.engine->getTensorDataType(n));
    if (type != static_cast<int>(t.dtype == "int64" ? nv::DataType::kINT64 : nv::DataType::kFLOAT))
      fail(TGIR_ERR_BAD_BUNDLE, path + ": tensor " + t.name + " has nvinfer1::DataType " + std::to_string(type) +
                                    ", not the manifest's " + t.dtype + "; " + kRebuild);
    TensorSpec spec{t.name, t.dtype, input, t.dtype == "int64" ? size_t{8} : size_t{4}, {}, {}};
    if (input) {
      spec.min = e.engine->getProfileShape(n, 0, nv::OptProfileSelector::kMIN);
      spec.max = e.engine->getProfileShape(n, 0, nv::OptProfileSelector::kMAX);
      if (spec.max.nbDims != static_cast<int>(t.shape.size()) || t.shape.empty() || volume(spec.max) < 1)
        fail(TGIR_ERR_BAD_BUNDLE, path + ": input " + t.name + " has another rank than the manifest's; " + kRebuild);
    }
    e.tensors.push_back(spec);
  }
  e.inputs = g.inputs.size();
  e.fixed_batch = e.tensors[0].min.d[0] == e.tensors[0].max.d[0];
}

void load_engine(Model& m, const Bundle& b, const std::string& name) {
  const json& spec = b.manifest.at("graphs").at(name);
  if (!spec.contains("engine") || !spec["engine"].is_string() || !b.files.count(spec["engine"].get<std::string>()))
    fail(TGIR_ERR_BAD_BUNDLE, b.dir + ": graph '" + name + "' has no checksummed engine file; " + kRebuild);
  const std::string path = b.path(spec["engine"].get<std::string>()), blob = read_file(path);
  Engine& e = m.engines[name];  // owned by the model from here on, so a failure below still frees it
  const size_t mark = m.logger.mark();
  e.engine = blob.empty() ? nullptr : m.runtime->deserializeCudaEngine(blob.data(), blob.size());
  if (!e.engine)
    fail(TGIR_ERR_BAD_BUNDLE, path + ": TensorRT cannot deserialize this engine" + m.logger.since(mark) +
                                  "; the file is truncated or corrupt: " + kRebuild);
  check_contract(e, b.graph(name), path);
}

std::shared_ptr<Model> load_model(const Bundle& b, const json& facts, int device) {
  auto m = std::make_shared<Model>();
  m->device = device;
  m->precision = facts.contains("precision") ? text(facts, "precision") : b.precision;
  DeviceGuard guard(device);  // engines are deserialized onto the current device
  if (!(m->runtime = nv::createInferRuntime(m->logger)))  // e.g. libnvinfer older than the headers
    fail(getInferLibVersion() == NV_TENSORRT_VERSION ? TGIR_ERR_BACKEND : TGIR_ERR_VERSION_MISMATCH,
         "TensorRT could not create a runtime" + m->logger.since(0) + " (libnvinfer " +
             std::to_string(getInferLibVersion()) + ", libtgir built for " + std::to_string(NV_TENSORRT_VERSION) + ")");
  // A version-compatible plan embeds its lean runtime, i.e. host code; the bundle's checksums vouch for it.
  if (flag(facts, "version_compatible")) m->runtime->setEngineHostCodeAllowed(true);
  if (facts.contains("dla_core") && facts["dla_core"].is_number_integer())
    m->runtime->setDLACore(facts["dla_core"].get<int32_t>());
  for (const auto& kv : b.graphs) load_engine(*m, b, kv.first);
  return m;
}

}  // namespace

bool tensorrt_available() { return true; }

std::unique_ptr<Backend> make_tensorrt_backend(const Bundle& bundle, const tgir_runtime_options& options) {
  if (options.device < 0) fail(TGIR_ERR_INVALID_ARGUMENT, "TensorRT needs a CUDA device (options.device >= 0)");
  const auto ptr = json::json_pointer("/build/tensorrt");
  if (!bundle.manifest.contains(ptr) || !bundle.manifest.at(ptr).is_object())
    fail(TGIR_ERR_UNSUPPORTED, bundle.dir + ": no TensorRT engines; run `tgir-export build-engine --backend tensorrt`");
  const json& facts = bundle.manifest.at(ptr);
  check_facts(bundle, facts, options.device);
  return std::make_unique<TensorRtBackend>(load_model(bundle, facts, options.device), options.cuda_graphs == 1);
}

}  // namespace tgir
