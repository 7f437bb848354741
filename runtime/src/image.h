// The preprocessing contract of tgir/data/images.py (Preprocess.__call__), reimplemented so that an
// image gives the C runtime the same network input, value for value, as the Python runtimes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace tgir {

/// How an RGB picture becomes a [3, size, size] float32 array: bilinear resize to side x side
/// (side = resize, or size when resize is 0) unless it already is that, centre crop `size`, x / 255,
/// minus mean, divided by std.
struct Preprocess {
  size_t size = 224;
  size_t resize = 0;  // 0: none (Python's None)
  // Python's defaults (ImageNet), rounded from double to float as numpy rounds the Python floats
  // (a float literal such as 0.485f could differ in the last bit).
  float mean[3] = {static_cast<float>(0.485), static_cast<float>(0.456), static_cast<float>(0.406)};
  float std[3] = {static_cast<float>(0.229), static_cast<float>(0.224), static_cast<float>(0.225)};

  /// Read a manifest's "preprocess" object with the checks of Preprocess.from_dict and __post_init__
  /// (absent keys take the defaults, as in Python). `where` starts error messages. Throws
  /// tgir::Error(TGIR_ERR_BAD_BUNDLE).
  static Preprocess from_json(const nlohmann::json& j, const std::string& where);
};

/// Apply `p` to an RGB image: `pixels` is HWC uint8 with `stride` bytes per row (>= width * 3),
/// width and height > 0. `out` receives 3 * p.size * p.size floats, CHW. The resize reproduces
/// Pillow's Image.resize(..., Image.BILINEAR) bit for bit (Pillow 13's pass order); only
/// std::bad_alloc can be thrown.
void preprocess_rgb(const Preprocess& p, const uint8_t* pixels, size_t width, size_t height, size_t stride,
                    float* out);

}  // namespace tgir
