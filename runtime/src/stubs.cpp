// Backends left out of this build: they answer TGIR_ERR_UNSUPPORTED with how to get them.
#include "backend.h"
#include "error.h"

namespace tgir {

#ifndef TGIR_WITH_AOTI
bool aoti_available() { return false; }
std::unique_ptr<Backend> make_aoti_backend(const Bundle&, const tgir_runtime_options&) {
  fail(TGIR_ERR_UNSUPPORTED, "this libtgir was built without the AOTInductor backend (configure with "
                             "-DTGIR_WITH_AOTI=ON and a torch installation)");
}
#endif

#ifndef TGIR_WITH_TENSORRT
bool tensorrt_available() { return false; }
std::unique_ptr<Backend> make_tensorrt_backend(const Bundle&, const tgir_runtime_options&) {
  fail(TGIR_ERR_UNSUPPORTED, "this libtgir was built without the TensorRT backend (configure with "
                             "-DTGIR_WITH_TENSORRT=ON -DTensorRT_ROOT=<TensorRT install>)");
}
#endif

}  // namespace tgir
