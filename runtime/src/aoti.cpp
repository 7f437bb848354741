// AOTInductor backend: each graph is a shared object compiled by torch._inductor
// (`tgir-export aoti`), driven through the C interface the torch wheel declares in
// torch/csrc/inductor/aoti_runtime/interface.h, with tensors made by the C shim
// (torch/csrc/inductor/aoti_torch/c/shim.h) that libtorch_cpu implements.
#include <dlfcn.h>
#include <elf.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <chrono>
#include <sstream>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>

#include <torch/csrc/inductor/aoti_runtime/interface.h>

#include "backend.h"
#include "error.h"

namespace tgir {
namespace {

// How many runs one container serves at once: one per runtime clone that runs concurrently (a
// clone beyond this waits for a free model instance inside AOTI, it never fails).
constexpr size_t kModelsPerContainer = 4;

using CreateFn = decltype(&AOTInductorModelContainerCreateWithDevice);
using DeleteFn = decltype(&AOTInductorModelContainerDelete);
using RunFn = decltype(&AOTInductorModelContainerRun);
using CountFn = decltype(&AOTInductorModelContainerGetNumInputs);
// Spelled out, not decltype'd: torch releases before 2.12 neither export nor declare it.
using LastErrorFn = AOTIRuntimeError (*)(const char** error_msg);

/// One compiled graph: the dlopen'ed library and its model container, shared by all clones.
struct Graph {
  void* library = nullptr;
  AOTInductorModelContainerHandle container = nullptr;
  DeleteFn destroy = nullptr;
  RunFn run = nullptr;
  LastErrorFn last_error = nullptr;  // absent in older torch releases
  size_t num_inputs = 0, num_outputs = 0;

  ~Graph() {
    if (container && destroy) destroy(container);
    if (library) dlclose(library);
  }
};

template <typename Fn>
Fn symbol(void* library, const char* name, const std::string& file) {
  void* p = dlsym(library, name);
  if (!p) fail(TGIR_ERR_BAD_BUNDLE, file + ": not an AOTInductor package (no " + name + ")");
  return reinterpret_cast<Fn>(p);
}

std::string device_string(int device) { return device < 0 ? "cpu" : "cuda:" + std::to_string(device); }

/// Refuse a shared object that is not a complete 64-bit ELF file before dlopen maps it: a truncated
/// file would map segments past its end, and touching them raises SIGBUS instead of an error.
void check_elf(const std::string& file) {
  std::ifstream in(file, std::ios::binary | std::ios::ate);
  if (!in) fail(TGIR_ERR_BAD_BUNDLE, file + ": cannot read the compiled graph");
  const auto size = static_cast<uint64_t>(in.tellg());
  auto bad = [&](const std::string& why) {
    fail(TGIR_ERR_BAD_BUNDLE, file + ": cannot load the compiled graph (" + why + "); re-run `tgir-export aoti`");
  };
  Elf64_Ehdr eh;
  in.seekg(0);
  if (size < sizeof eh || !in.read(reinterpret_cast<char*>(&eh), sizeof eh) ||
      std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64)
    bad("not a 64-bit ELF shared object");
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > size || eh.e_phnum > (size - eh.e_phoff) / sizeof(Elf64_Phdr))
    bad("truncated program headers");
  if (eh.e_shnum && (eh.e_shoff > size || eh.e_shnum > (size - eh.e_shoff) / sizeof(Elf64_Shdr)))
    bad("file truncated: section headers past its end");
  in.seekg(static_cast<std::streamoff>(eh.e_phoff));
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    if (!in.read(reinterpret_cast<char*>(&ph), sizeof ph)) bad("truncated program headers");
    if (ph.p_type == PT_LOAD && (ph.p_offset > size || ph.p_filesz > size - ph.p_offset))
      bad("file truncated: a segment ends past its end");
  }
}

/// Refuse a package whose input and output counts are not the contract's. (The container's tensor
/// names are Inductor's placeholders, "arg256_1", the same in every graph, so they tell nothing.)
void check_signature(Graph& g, const std::string& file, const GraphInfo& info) {
  auto count = [&](const char* fn, size_t& n) {
    if (symbol<CountFn>(g.library, fn, file)(g.container, &n) != AOTI_RUNTIME_SUCCESS)
      fail(TGIR_ERR_BAD_BUNDLE, file + ": " + fn + " failed");
  };
  count("AOTInductorModelContainerGetNumInputs", g.num_inputs);
  count("AOTInductorModelContainerGetNumOutputs", g.num_outputs);
  if (g.num_inputs != info.inputs.size() || g.num_outputs != info.outputs.size())
    fail(TGIR_ERR_BAD_BUNDLE, file + ": takes " + std::to_string(g.num_inputs) + " inputs and gives " +
                                  std::to_string(g.num_outputs) + " outputs; the manifest's contract says " +
                                  std::to_string(info.inputs.size()) + " and " + std::to_string(info.outputs.size()));
}

/// A package is code: one compiled for another graph (text_encoder.so copied over composer.so) has
/// the same input count and names, and fed the wrong tensors it throws inside an OpenMP worker, where
/// no exception can be caught and the process terminates. Only its checksum tells it apart, so the
/// packages are hashed even when the caller turned verify_checksums off for the other files.
void check_package_digest(const std::string& file, const std::string& want) {
  if (sha256_file(file) != want)
    fail(TGIR_ERR_BAD_BUNDLE, file + ": checksum differs from manifest.json (another graph's package, or changed); "
                                  "compiled packages are always verified. Re-run `tgir-export aoti --force`");
}

std::shared_ptr<Graph> load_graph(const std::string& file, const std::string& sha256, bool verified,
                                  const std::string& device, const GraphInfo& info) {
  check_elf(file);  // first: names a truncated file as such
  if (!verified) check_package_digest(file, sha256);
  auto g = std::make_shared<Graph>();
  g->library = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!g->library) {
    const char* why = dlerror();
    fail(TGIR_ERR_BAD_BUNDLE, file + ": cannot load the compiled graph (" + (why ? why : "dlopen failed") +
                                  "); re-run `tgir-export aoti` for this bundle");
  }
  auto create = symbol<CreateFn>(g->library, "AOTInductorModelContainerCreateWithDevice", file);
  g->destroy = symbol<DeleteFn>(g->library, "AOTInductorModelContainerDelete", file);
  g->run = symbol<RunFn>(g->library, "AOTInductorModelContainerRun", file);
  g->last_error = reinterpret_cast<LastErrorFn>(dlsym(g->library, "AOTInductorGetLastError"));
  if (create(&g->container, kModelsPerContainer, device.c_str(), nullptr) != AOTI_RUNTIME_SUCCESS)
    fail(TGIR_ERR_BACKEND, file + ": AOTInductor could not create the model on " + device);
  check_signature(*g, file, info);
  return g;
}

int32_t shim_dtype(const std::string& dtype) {
  if (dtype == "float32") return aoti_torch_dtype_float32();
  if (dtype == "int64") return aoti_torch_dtype_int64();
  fail(TGIR_ERR_UNSUPPORTED, "AOTI backend: tensors of dtype " + dtype + " are not supported");
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

/// Deletes shim tensors still owned by us when a run fails midway.
struct Handles {
  std::vector<AtenTensorHandle> h;
  ~Handles() {
    for (auto t : h)
      if (t) aoti_torch_delete_tensor_object(t);
  }
};

class AotiBackend : public Backend {
 public:
  AotiBackend(std::map<std::string, std::shared_ptr<Graph>> graphs, int device, int threads)
      : graphs_(std::move(graphs)), device_(device), threads_(threads) {}

  std::string name() const override { return "aoti"; }
  std::string device() const override { return device_string(device_); }
  std::string precision() const override { return "fp32"; }
  std::unique_ptr<Backend> clone() const override { return std::make_unique<AotiBackend>(graphs_, device_, threads_); }

  void run(const std::string& name, const std::vector<const Tensor*>& inputs, std::vector<Tensor>& outputs) override {
    auto it = graphs_.find(name);
    if (it == graphs_.end()) fail(TGIR_ERR_BAD_BUNDLE, "AOTI backend: the bundle has no compiled '" + name + "'");
    Graph& g = *it->second;
    if (inputs.size() != g.num_inputs) fail(TGIR_ERR_INTERNAL, name + ": wrong number of inputs");
    set_threads();
    Handles in, out;
    for (const Tensor* t : inputs) in.h.push_back(to_device(*t));
    out.h.assign(g.num_outputs, nullptr);
    // Run steals the input handles (even when it fails), so they are no longer ours to delete.
    AOTIRuntimeError rc = g.run(g.container, in.h.data(), in.h.size(), out.h.data(), out.h.size(), nullptr, nullptr);
    in.h.clear();
    if (rc != AOTI_RUNTIME_SUCCESS) {
      const char* msg = nullptr;
      if (g.last_error) g.last_error(&msg);
      fail(TGIR_ERR_BACKEND, "AOTI backend: running " + name + " failed" + (msg && *msg ? std::string(": ") + msg : ""));
    }
    outputs.resize(out.h.size());
    for (size_t i = 0; i < out.h.size(); ++i) to_host(out.h[i], outputs[i]);
  }

 private:
  void set_threads() const {
    // The compiled CPU kernels use OpenMP; the thread count is a per-thread setting, so set it on
    // the calling thread before each run (libgomp is already loaded by the model libraries).
    using SetThreads = void (*)(int);
    static auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    if (threads_ > 0 && set) set(threads_);
  }

  AtenTensorHandle to_device(const Tensor& t) const {
    auto strides = contiguous_strides(t.shape);
    AtenTensorHandle host = nullptr;
    void* data = const_cast<unsigned char*>(t.bytes.data());  // read-only use: AOTI does not write inputs
    if (aoti_torch_create_tensor_from_blob(data, static_cast<int64_t>(t.shape.size()), t.shape.data(), strides.data(),
                                           0, shim_dtype(t.dtype), aoti_torch_device_type_cpu(), 0, &host))
      fail(TGIR_ERR_BACKEND, "AOTI backend: cannot wrap an input tensor");
    if (device_ < 0) return host;
    Handles keep;
    keep.h.push_back(host);
    AtenTensorHandle dev = nullptr;
    if (aoti_torch_empty_strided(static_cast<int64_t>(t.shape.size()), t.shape.data(), strides.data(),
                                 shim_dtype(t.dtype), aoti_torch_device_type_cuda(), device_, &dev) ||
        aoti_torch_copy_(dev, host, 0))
      fail(TGIR_ERR_BACKEND, "AOTI backend: cannot copy an input to " + device());
    return dev;
  }

  void to_host(AtenTensorHandle t, Tensor& out) const {
    int64_t dim = 0, *sizes = nullptr;
    int32_t dtype = 0, dev_type = 0;
    aoti_torch_get_dim(t, &dim);
    aoti_torch_get_sizes(t, &sizes);
    aoti_torch_get_dtype(t, &dtype);
    aoti_torch_get_device_type(t, &dev_type);
    if (dtype != aoti_torch_dtype_float32()) fail(TGIR_ERR_BACKEND, "AOTI backend: an output is not float32");
    out.resize("float32", std::vector<int64_t>(sizes, sizes + dim));
    auto strides = contiguous_strides(out.shape);
    Handles keep;
    AtenTensorHandle contiguous = nullptr;  // outputs may be strided views: copy into our own layout
    if (aoti_torch_create_tensor_from_blob(out.bytes.data(), dim, out.shape.data(), strides.data(), 0, dtype,
                                           aoti_torch_device_type_cpu(), 0, &contiguous))
      fail(TGIR_ERR_BACKEND, "AOTI backend: cannot wrap an output buffer");
    keep.h.push_back(contiguous);
    if (aoti_torch_copy_(contiguous, t, 0)) fail(TGIR_ERR_BACKEND, "AOTI backend: cannot copy an output to the host");
  }

  std::map<std::string, std::shared_ptr<Graph>> graphs_;
  int device_;
  int threads_;
};

const nlohmann::json& aoti_section(const Bundle& bundle) {
  const auto& m = bundle.manifest;
  if (!m.contains("aoti") || !m["aoti"].is_object() || !m["aoti"].contains("graphs") || !m["aoti"]["graphs"].is_object())
    fail(TGIR_ERR_UNSUPPORTED, bundle.dir + ": the bundle has no AOTInductor packages; run `tgir-export aoti --bundle " +
                                   bundle.dir + "` first");
  return m["aoti"];
}

/// An optional string in the manifest's aoti section; a value of another type is a malformed bundle,
/// reported by name (nlohmann's own type_error would surface as an internal error).
std::string text_field(const Bundle& bundle, const nlohmann::json& section, const char* key, const char* fallback) {
  if (!section.contains(key)) return fallback;
  const auto& v = section.at(key);
  if (!v.is_string())
    fail(TGIR_ERR_BAD_BUNDLE, bundle.dir + "/manifest.json: aoti." + key + " must be a string, got " + v.dump());
  return v.get<std::string>();
}

#if defined(__x86_64__) || defined(__i386__)
/// AMX tiles: the CPU must have them (CPUID.7.0:EDX[24]) and the OS must save their state (XCR0
/// bits 17 and 18); Linux also requires a per-process permission that torch's kernels request.
bool cpu_has_amx_tile() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24))) return false;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;  // OSXSAVE: xgetbv usable
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & (3u << 17)) == (3u << 17);
}

/// Whether this CPU has one ISA token of torch's str(pick_vec_isa()) ("avx2", "avx512",
/// "avx512_vnni", "amx_tile"), with the compiler flags Inductor adds for it; unknown tokens are
/// treated as missing, since kernels compiled for them may not run here.
bool cpu_has(const std::string& feature) {
  __builtin_cpu_init();
  if (feature == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (feature == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
  if (feature == "avx512_vnni") return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
  if (feature == "amx_tile") return cpu_has_amx_tile();
  return feature == "none";
}
#else
bool cpu_has(const std::string&) { return true; }  // non-x86 ISAs (asimd, sve, vsx...) are not checked
#endif

/// Inductor compiles CPU kernels for the exporting machine's vector ISA; on a CPU without one of its
/// features they would die of SIGILL, so refuse them here with a message instead.
void check_cpu_isa(const Bundle& bundle, const std::string& isa) {
  std::istringstream words(isa);
  std::string missing;
  for (std::string feature; words >> feature;)
    if (!cpu_has(feature)) missing += (missing.empty() ? "" : " ") + feature;
  if (!missing.empty())
    fail(TGIR_ERR_VERSION_MISMATCH, bundle.dir + ": the AOTInductor packages were compiled for " + isa +
                                        " CPUs and this CPU lacks " + missing +
                                        "; run `tgir-export aoti --force` on this machine");
}

/// How many CUDA devices the CUDA runtime sees, or -1 when that cannot be told (never refuse on a guess). Without a CUDA build
/// of torch no graph can run on a GPU, so none exists for libtgir. With one, libcudart is among
/// libtgir's own dependencies, which dlsym on libtgir's handle searches (RTLD_DEFAULT would miss them
/// when the application loaded libtgir with RTLD_LOCAL, as Python's ctypes does).
int visible_cuda_devices() {
#ifndef TGIR_TORCH_HAS_CUDA
  return 0;
#else
  Dl_info self{};
  if (!dladdr(reinterpret_cast<void*>(&visible_cuda_devices), &self) || !self.dli_fname) return -1;
  void* handle = dlopen(self.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (!handle) return -1;
  using CountDevices = int (*)(int*);
  auto count_devices = reinterpret_cast<CountDevices>(dlsym(handle, "cudaGetDeviceCount"));
  int n = 0;
  if (!count_devices) n = -1;
  else if (count_devices(&n) != 0) n = -1;  // no driver, no GPU, or not yet usable: let loading say why
  dlclose(handle);
  return n;
#endif
}

/// A CUDA device index that cannot exist is the caller's mistake, whatever the bundle was compiled for.
void check_device_exists(int device) {
  if (device < 0) return;
  const int n = visible_cuda_devices();
  if (n >= 0 && device >= n)
    fail(TGIR_ERR_INVALID_ARGUMENT, "tgir_runtime_open: CUDA device " + std::to_string(device) + " does not exist (" +
                                        (n ? std::to_string(n) + " visible" : std::string("no CUDA device here")) + ")");
}

void check_compat(const Bundle& bundle, const nlohmann::json& section, int device) {
  check_device_exists(device);
  const std::string built_for = text_field(bundle, section, "device", "cpu");
  if ((device < 0) != (built_for == "cpu"))
    fail(TGIR_ERR_VERSION_MISMATCH, bundle.dir + ": the AOTInductor packages were compiled for " + built_for +
                                        ", not " + device_string(device) + "; run `tgir-export aoti --device " +
                                        (device < 0 ? "cpu" : "cuda") + "` or choose that device");
  const std::string isa = text_field(bundle, section, "cpu_isa", "");
  if (device < 0) check_cpu_isa(bundle, isa);
  [[maybe_unused]] const std::string torch = text_field(bundle, section, "torch", "");
#ifdef TGIR_TORCH_VERSION
  // Compiled graphs call into libtorch through its C shim; only the release they were compiled with
  // is guaranteed to provide every function they use with the same meaning.
  const std::string mine = TGIR_TORCH_VERSION;
  auto release = [](const std::string& v) { return v.substr(0, v.find_first_of("+")); };
  if (release(torch) != release(mine))
    fail(TGIR_ERR_VERSION_MISMATCH, bundle.dir + ": the AOTInductor packages were compiled with torch " + torch +
                                        "; this libtgir runs torch " + mine + ". Re-run `tgir-export aoti --force`");
#endif
}

}  // namespace

bool aoti_available() { return true; }

std::unique_ptr<Backend> make_aoti_backend(const Bundle& bundle, const tgir_runtime_options& options) {
  const auto& section = aoti_section(bundle);
  check_compat(bundle, section, options.device);
  std::map<std::string, std::shared_ptr<Graph>> graphs;
  for (const char* name : {"image_encoder", "text_encoder", "composer"}) {
    const auto& listed = section["graphs"];
    const auto entry = listed.contains(name) ? listed.at(name) : nlohmann::json();
    if (!entry.is_object() || !entry.contains("file") || !entry["file"].is_string())
      fail(TGIR_ERR_BAD_BUNDLE, bundle.dir + "/manifest.json: aoti section lacks graph '" + name + "'");
    const std::string rel = entry["file"].get<std::string>();
    if (!bundle.files.count(rel))
      fail(TGIR_ERR_BAD_BUNDLE, bundle.dir + "/manifest.json: " + rel + " is not checksummed in 'files'");
    graphs[name] = load_graph(bundle.path(rel), bundle.files.at(rel), options.verify_checksums != 0,
                              device_string(options.device), bundle.graph(name));
  }
  return std::make_unique<AotiBackend>(std::move(graphs), options.device, options.num_threads);
}

}  // namespace tgir
