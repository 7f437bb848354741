// Preprocess.__call__ of tgir/data/images.py: Pillow's bilinear resize, centre crop, normalisation.
//
// The resize reimplements the arithmetic of Pillow's ImagingResample (src/libImaging/Resample.c,
// Pillow 13.0): separable passes with a triangle filter whose support grows with the downscale factor
// (antialiasing), weights normalised in double and rounded to 22-bit fixed point, each pass rounding
// and clipping to uint8. Matching it step by step makes our pixels equal Pillow's exactly, which a
// "close enough" bilinear would not (models see +-1 differences in most pixels otherwise).
#include "image.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "error.h"

namespace tgir {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS: 8 bits of result, 2 of headroom
constexpr size_t kMaxSide = 16384;          // a bound so that a corrupt manifest cannot ask for gigabytes

/// Read-only HWC RGB pixels.
struct View {
  const uint8_t* data;
  size_t width, height, stride;
};

/// An owned HWC RGB image with rows packed.
struct Image {
  std::vector<uint8_t> pixels;
  size_t width = 0, height = 0;
  View view() const { return {pixels.data(), width, height, width * 3}; }
};

/// Fixed-point weights that resample one axis: output i reads inputs first[i] .. first[i] + count(i),
/// with weights k[begin[i] .. begin[i + 1]). Stored packed, unlike Pillow's out_size x ksize table, so
/// a huge downscale needs memory in proportion to the input only.
struct Weights {
  std::vector<size_t> first;
  std::vector<size_t> begin;
  std::vector<int32_t> k;
};

double triangle(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Pillow's precompute_coeffs (box = the whole axis) followed by normalize_coeffs_8bpc.
Weights bilinear_weights(size_t in_size, size_t out_size) {
  // Pillow takes the box's extent as a float before widening it; exact below 2^24, but kept so that
  // wider images round as Pillow does.
  const double scale = static_cast<double>(static_cast<float>(in_size)) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;  // the triangle's support is 1
  const double inv_filterscale = 1.0 / filterscale;
  const auto in_end = static_cast<long long>(in_size);
  Weights w;
  w.first.resize(out_size);
  w.begin.resize(out_size + 1);
  std::vector<double> raw;
  for (size_t xx = 0; xx < out_size; ++xx) {
    // Pillow adds the box origin (0 here) to this product; leaving the addition out keeps the value
    // and also keeps a compiler from fusing it into an FMA, which would round differently.
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    // Truncating casts, as Pillow's (int) "rounding".
    const long long xmin = std::max(static_cast<long long>(center - support + 0.5), 0LL);
    const long long xmax = std::min(static_cast<long long>(center + support + 0.5), in_end);
    raw.clear();
    double ww = 0.0;
    for (long long x = xmin; x < xmax; ++x) {
      raw.push_back(triangle((static_cast<double>(x) - center + 0.5) * inv_filterscale));
      ww += raw.back();
    }
    w.first[xx] = static_cast<size_t>(xmin);
    w.begin[xx] = w.k.size();
    for (double r : raw) {
      if (ww != 0.0) r /= ww;
      const double fixed = r * (1 << kPrecisionBits);
      w.k.push_back(static_cast<int32_t>(r < 0 ? -0.5 + fixed : 0.5 + fixed));
    }
  }
  w.begin[out_size] = w.k.size();
  return w;
}

// Pillow's clip8: the sum carries 2^(bits-1) for rounding, so the shift rounds to nearest.
uint8_t clip8(int64_t sum) {
  if (sum < 0) return 0;
  return static_cast<uint8_t>(std::min<int64_t>(sum >> kPrecisionBits, 255));
}

// Resample each row to `out_width` pixels (Pillow's horizontal 8-bit pass).
Image resample_rows(const View& in, size_t out_width) {
  const Weights w = bilinear_weights(in.width, out_width);
  Image out;
  out.width = out_width;
  out.height = in.height;
  out.pixels.resize(out.width * out.height * 3);
  for (size_t y = 0; y < in.height; ++y) {
    const uint8_t* row = in.data + y * in.stride;
    uint8_t* dst = &out.pixels[y * out.width * 3];
    for (size_t xx = 0; xx < out_width; ++xx) {
      int64_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      const uint8_t* px = row + w.first[xx] * 3;
      for (size_t t = w.begin[xx]; t < w.begin[xx + 1]; ++t, px += 3) {
        s0 += px[0] * w.k[t];
        s1 += px[1] * w.k[t];
        s2 += px[2] * w.k[t];
      }
      dst[xx * 3 + 0] = clip8(s0);
      dst[xx * 3 + 1] = clip8(s1);
      dst[xx * 3 + 2] = clip8(s2);
    }
  }
  return out;
}

// Resample each column to `out_height` pixels (Pillow's vertical 8-bit pass). Whole rows are
// accumulated at a time, which reads the input in order; integer sums make the order irrelevant.
Image resample_columns(const View& in, size_t out_height) {
  const Weights w = bilinear_weights(in.height, out_height);
  Image out;
  out.width = in.width;
  out.height = out_height;
  out.pixels.resize(out.width * out.height * 3);
  const size_t n = in.width * 3;
  std::vector<int64_t> sum(n);
  for (size_t yy = 0; yy < out_height; ++yy) {
    std::fill(sum.begin(), sum.end(), int64_t{1} << (kPrecisionBits - 1));
    const uint8_t* row = in.data + w.first[yy] * in.stride;
    for (size_t t = w.begin[yy]; t < w.begin[yy + 1]; ++t, row += in.stride) {
      const int64_t k = w.k[t];
      for (size_t i = 0; i < n; ++i) sum[i] += row[i] * k;
    }
    uint8_t* dst = &out.pixels[yy * n];
    for (size_t i = 0; i < n; ++i) dst[i] = clip8(sum[i]);
  }
  return out;
}

// Image.resize((side, side), Image.BILINEAR) on an image of another size. Pillow 13 runs the vertical
// pass first when the height shrinks more than twice as much as the width (ImagingResampleInner);
// the order changes the rounding between passes, so we follow it. A pass whose axis keeps its
// size is skipped, as in Pillow.
Image resize_bilinear(const View& in, size_t side) {
  const auto w = static_cast<long long>(in.width), h = static_cast<long long>(in.height);
  const auto s = static_cast<long long>(side);
  const bool horizontal_first = !(h - s > 0 && h - s > (w - s) * 2);
  const bool need_horizontal = in.width != side, need_vertical = in.height != side;
  if (horizontal_first) {
    if (!need_horizontal) return resample_columns(in, side);
    Image tmp = resample_rows(in, side);
    return need_vertical ? resample_columns(tmp.view(), side) : tmp;
  }
  Image tmp = resample_columns(in, side);  // here the height always changes
  return need_horizontal ? resample_rows(tmp.view(), side) : tmp;
}

}  // namespace

void preprocess_rgb(const Preprocess& p, const uint8_t* pixels, size_t width, size_t height, size_t stride,
                    float* out) {
  const size_t side = p.resize ? p.resize : p.size;
  View src{pixels, width, height, stride};
  Image resized;
  if (width != side || height != side) {
    resized = resize_bilinear(src, side);
    src = resized.view();
  }
  // (x / 255 - mean) / std in float32, one operation at a time as numpy does it; a table per channel
  // evaluates it once per possible byte.
  float table[3][256];
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) table[c][v] = (static_cast<float>(v) / 255.0f - p.mean[c]) / p.std[c];
  const size_t off = (side - p.size) / 2;  // Python's (side - size) // 2 crop offset
  const size_t plane = p.size * p.size;
  for (size_t y = 0; y < p.size; ++y) {
    const uint8_t* row = src.data + (off + y) * src.stride + off * 3;
    for (size_t x = 0; x < p.size; ++x)
      for (int c = 0; c < 3; ++c) out[c * plane + y * p.size + x] = table[c][row[x * 3 + c]];
  }
}

namespace {

size_t side_member(const nlohmann::json& j, const char* key, size_t least, const std::string& where) {
  const auto& v = j.at(key);
  if (!v.is_number_integer() || v < least || v > kMaxSide)
    fail(TGIR_ERR_BAD_BUNDLE, where + ": preprocess " + key + " must be an integer in [" + std::to_string(least) +
                                  ", " + std::to_string(kMaxSide) + "], got " + v.dump());
  return v.get<size_t>();
}

void triple_member(const nlohmann::json& j, const char* key, float* out, bool positive, const std::string& where) {
  const auto& v = j.at(key);
  bool ok = v.is_array() && v.size() == 3;
  for (size_t i = 0; ok && i < 3; ++i) {
    ok = v[i].is_number() && (!positive || v[i].get<double>() > 0.0);
    if (ok) out[i] = static_cast<float>(v[i].get<double>());  // numpy's float64 -> float32 cast
  }
  if (!ok)
    fail(TGIR_ERR_BAD_BUNDLE, where + ": preprocess " + key + " must be three numbers" +
                                  (positive ? " > 0" : "") + ", got " + v.dump());
}

}  // namespace

Preprocess Preprocess::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail(TGIR_ERR_BAD_BUNDLE, where + ": 'preprocess' must be an object");
  Preprocess p;
  try {
    static const std::pair<const char*, const char*> kFixed[] = {
        {"color_order", "RGB"}, {"layout", "NCHW"}, {"dtype", "float32"}};
    for (const auto& [key, want] : kFixed) {
      if (j.contains(key) && j.at(key) != want)
        fail(TGIR_ERR_BAD_BUNDLE, where + ": preprocess " + key + " is " + j.at(key).dump() + "; this tgir applies \"" +
                                      want + "\"");
    }
    // Absent keys keep the defaults, as Preprocess(**fields) does in Python.
    if (j.contains("size")) p.size = side_member(j, "size", 1, where);
    if (j.contains("resize") && !j.at("resize").is_null()) p.resize = side_member(j, "resize", p.size, where);
    if (j.contains("mean")) triple_member(j, "mean", p.mean, false, where);
    if (j.contains("std")) triple_member(j, "std", p.std, true, where);
  } catch (const nlohmann::json::exception& err) {  // types are checked before each read; a fence
    fail(TGIR_ERR_BAD_BUNDLE, where + ": malformed preprocess entry (" + err.what() + ")");
  }
  return p;
}

}  // namespace tgir
