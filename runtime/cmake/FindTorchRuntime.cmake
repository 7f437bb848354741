# Locates the parts of a torch installation the AOTInductor backend uses: its C shim headers
# (torch/include) and libtorch_cpu + libc10, which implement the shim the compiled graphs call.
# Sets TGIR_TORCH_DIR, TGIR_TORCH_VERSION, TGIR_TORCH_LIBRARIES.
if(NOT TGIR_TORCH_DIR)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c "import os, torch; print(os.path.dirname(torch.__file__))"
    OUTPUT_VARIABLE _torch_dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc ERROR_VARIABLE _err)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "TGIR_WITH_AOTI: cannot import torch with ${Python3_EXECUTABLE} (${_err}); "
                        "set -DTGIR_TORCH_DIR=<site-packages/torch> or -DTGIR_WITH_AOTI=OFF")
  endif()
  set(TGIR_TORCH_DIR "${_torch_dir}" CACHE PATH "torch package folder" FORCE)
endif()
if(NOT EXISTS "${TGIR_TORCH_DIR}/include/torch/csrc/inductor/aoti_runtime/interface.h")
  message(FATAL_ERROR "TGIR_WITH_AOTI: ${TGIR_TORCH_DIR} has no AOTInductor headers")
endif()
file(STRINGS "${TGIR_TORCH_DIR}/version.py" _version_line REGEX "^__version__")
string(REGEX MATCH "'([^']+)'" _ "${_version_line}")
set(TGIR_TORCH_VERSION "${CMAKE_MATCH_1}")
find_library(TGIR_TORCH_CPU torch_cpu PATHS "${TGIR_TORCH_DIR}/lib" NO_DEFAULT_PATH REQUIRED)
find_library(TGIR_C10 c10 PATHS "${TGIR_TORCH_DIR}/lib" NO_DEFAULT_PATH REQUIRED)
set(TGIR_TORCH_LIBRARIES ${TGIR_TORCH_CPU} ${TGIR_C10})
# The compiled graphs name more of torch's libraries than the shim's two: torch 2.11's name
# libtorch.so, and CUDA graphs libtorch_cuda.so / libc10_cuda.so. dlopen finds a graph's libraries
# only by soname among those already loaded (libtgir's RUNPATH does not apply to them), so libtgir
# loads every one this torch has; the caller links them with --no-as-needed to keep them.
foreach(_lib torch torch_cuda c10_cuda)
  find_library(TGIR_LIB_${_lib} ${_lib} PATHS "${TGIR_TORCH_DIR}/lib" NO_DEFAULT_PATH)
  if(TGIR_LIB_${_lib})
    list(APPEND TGIR_TORCH_LIBRARIES ${TGIR_LIB_${_lib}})
  endif()
endforeach()
message(STATUS "tgir: AOTInductor backend with torch ${TGIR_TORCH_VERSION} at ${TGIR_TORCH_DIR}")
