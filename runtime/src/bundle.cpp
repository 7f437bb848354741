// Reading a bundle's manifest.json with the same checks as tgir/manifest.py (Manifest.load).
#include "bundle.h"

#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "error.h"

namespace tgir {
namespace {

constexpr const char* kSchema = "tgir-bundle";
// The text graph's token count sizes a [batch, L] buffer per call; real vocabularies cut texts at
// tens of tokens, so a larger L can only come from a corrupt or hostile manifest.
constexpr int64_t kMaxTextLength = 4096;
const char* const kDtypes[] = {"float32", "float16", "int64", "int32", "bool"};

void append_escaped(std::string& out, const std::string& s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp = c;
    size_t n = 1;
    if (c >= 0x80) {  // decode UTF-8 (nlohmann only holds valid UTF-8)
      n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      cp = c & (0x3F >> (n - 1));
      for (size_t k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    i += n;
    auto u = [&](uint32_t v) {
      out += "\\u";
      for (int sh = 12; sh >= 0; sh -= 4) out += hex[(v >> sh) & 0xF];
    };
    if (cp == '"') out += "\\\"";
    else if (cp == '\\') out += "\\\\";
    else if (cp == '\n') out += "\\n";
    else if (cp == '\r') out += "\\r";
    else if (cp == '\t') out += "\\t";
    else if (cp == '\b') out += "\\b";
    else if (cp == '\f') out += "\\f";
    else if (cp < 0x20) u(cp);
    else if (cp < 0x80) out += static_cast<char>(cp);
    else if (cp < 0x10000) u(cp);
    else {  // a surrogate pair, as Python writes it
      cp -= 0x10000;
      u(0xD800 + (cp >> 10));
      u(0xDC00 + (cp & 0x3FF));
    }
  }
  out += '"';
}

void dumps(std::string& out, const nlohmann::json& v) {
  if (v.is_object()) {  // nlohmann's object is a std::map: keys already sorted bytewise
    out += '{';
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!first) out += ", ";
      first = false;
      append_escaped(out, it.key());
      out += ": ";
      dumps(out, it.value());
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) out += ", ";
      dumps(out, v[i]);
    }
    out += ']';
  } else if (v.is_string()) {
    append_escaped(out, v.get<std::string>());
  } else if (v.is_null()) {
    out += "null";
  } else {
    out += v.dump();  // integers and booleans print as Python does; contracts hold no floats
  }
}

nlohmann::json parse_json(const std::string& text, const std::string& where) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& err) {
    fail(TGIR_ERR_BAD_BUNDLE, where + ": not valid JSON (" + err.what() + ")");
  }
}

const nlohmann::json& member(const nlohmann::json& obj, const char* key, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key)) fail(TGIR_ERR_BAD_BUNDLE, where + ": missing '" + key + "'");
  return obj.at(key);
}

std::string string_member(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto& v = member(obj, key, where);
  if (!v.is_string()) fail(TGIR_ERR_BAD_BUNDLE, where + ": '" + key + "' must be a string");
  return v.get<std::string>();
}

TensorInfo tensor_info(const nlohmann::json& t, const std::string& where) {
  if (!t.is_object() || t.size() != 3 || !t.contains("name") || !t.contains("dtype") || !t.contains("shape"))
    fail(TGIR_ERR_BAD_BUNDLE, where + ": malformed tensor entry " + t.dump());
  TensorInfo info{string_member(t, "name", where), string_member(t, "dtype", where), {}};
  bool known = false;
  for (const char* d : kDtypes) known = known || info.dtype == d;
  if (!known) fail(TGIR_ERR_BAD_BUNDLE, where + ": tensor " + info.name + " has unknown dtype " + info.dtype);
  if (!t["shape"].is_array()) fail(TGIR_ERR_BAD_BUNDLE, where + ": tensor " + info.name + " shape is not a list");
  for (const auto& d : t["shape"]) {
    if (d.is_string()) info.shape.push_back(-1);
    else if (d.is_number_integer() && d.get<int64_t>() >= 0) info.shape.push_back(d.get<int64_t>());
    else fail(TGIR_ERR_BAD_BUNDLE, where + ": tensor " + info.name + " has a bad dimension " + d.dump());
  }
  return info;
}

GraphInfo graph_info(const nlohmann::json& spec, const std::string& where) {
  GraphInfo g;
  g.file = string_member(spec, "file", where);
  for (const char* key : {"inputs", "outputs"}) {
    const auto& list = member(spec, key, where);
    if (!list.is_array()) fail(TGIR_ERR_BAD_BUNDLE, where + ": '" + key + "' must be a list");
    for (const auto& t : list) (key[0] == 'i' ? g.inputs : g.outputs).push_back(tensor_info(t, where));
  }
  const auto& dyn = member(spec, "dynamic", where);
  if (!dyn.is_object()) fail(TGIR_ERR_BAD_BUNDLE, where + ": 'dynamic' must be an object");
  for (auto it = dyn.begin(); it != dyn.end(); ++it) {
    const auto& r = it.value();
    bool ok = r.is_array() && r.size() == 3 && r[0].is_number_integer() && r[1].is_number_integer() &&
              r[2].is_number_integer() && 1 <= r[0].get<int64_t>() && r[0].get<int64_t>() <= r[1].get<int64_t>() &&
              r[1].get<int64_t>() <= r[2].get<int64_t>();
    if (!ok) fail(TGIR_ERR_BAD_BUNDLE, where + ": axis '" + it.key() + "' range " + r.dump() + " is not [min, opt, max]");
    if (it.key() == "batch") {
      g.batch_min = r[0].get<int64_t>();
      g.batch_opt = r[1].get<int64_t>();
      g.batch_max = r[2].get<int64_t>();
    }
  }
  return g;
}

void check_schema(const nlohmann::json& m, const std::string& where) {
  if (!m.is_object() || !m.contains("schema") || m["schema"] != kSchema)
    fail(TGIR_ERR_BAD_BUNDLE, where + ": not a tgir bundle manifest (expected \"schema\": \"tgir-bundle\")");
  const auto& v = member(m, "schema_version", where);
  if (!v.is_number_integer())  // a malformed manifest, not one of another version
    fail(TGIR_ERR_BAD_BUNDLE, where + ": schema_version must be an integer, got " + v.dump());
  if (v.get<int64_t>() != TGIR_BUNDLE_SCHEMA_VERSION)
    fail(TGIR_ERR_VERSION_MISMATCH, where + ": manifest schema version " + v.dump() + "; this libtgir reads " +
                                        std::to_string(TGIR_BUNDLE_SCHEMA_VERSION) + " (re-export the bundle)");
}

void check_files(Bundle& b, const nlohmann::json& files, bool verify) {
  const std::string where = b.dir + "/manifest.json";
  if (!files.is_object()) fail(TGIR_ERR_BAD_BUNDLE, where + ": 'files' must map file names to SHA-256 digests");
  for (auto it = files.begin(); it != files.end(); ++it) {
    if (!it.value().is_string()) fail(TGIR_ERR_BAD_BUNDLE, where + ": checksum of " + it.key() + " is not a string");
    b.files[it.key()] = it.value().get<std::string>();
    const std::string file = b.path(it.key());
    if (std::FILE* f = std::fopen(file.c_str(), "rb")) std::fclose(f);
    else fail(TGIR_ERR_BAD_BUNDLE, file + ": missing from the bundle (listed in manifest.json)");
    if (verify && sha256_file(file) != b.files[it.key()])
      fail(TGIR_ERR_BAD_BUNDLE, file + ": checksum differs from manifest.json (file changed or truncated)");
  }
}

std::string to_hex(const unsigned char* bytes, unsigned int len) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) (out += hex[bytes[i] >> 4]) += hex[bytes[i] & 0xF];
  return out;
}

}  // namespace

std::string python_json_dumps(const nlohmann::json& value) {
  std::string out;
  dumps(out, value);
  return out;
}

std::string sha256_hex(const std::string& bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr))
    fail(TGIR_ERR_INTERNAL, "SHA-256 failed (OpenSSL)");
  return to_hex(md, len);
}

std::string sha256_file(const std::string& path) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::ifstream in(path, std::ios::binary);
  if (!ctx || !in) fail(TGIR_ERR_IO, path + ": cannot read");
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> block(1 << 20);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    EVP_DigestUpdate(ctx.get(), block.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  return to_hex(md, len);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f) std::fclose(f);
    fail(f ? TGIR_ERR_IO : TGIR_ERR_NOT_FOUND, path + (f ? ": cannot read" : ": not found"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Bundle::path(const std::string& relative) const {
  bool escapes = relative.empty() || relative[0] == '/' || relative.find('\\') != std::string::npos ||
                 relative == ".." || relative.rfind("../", 0) == 0 || relative.find("/../") != std::string::npos ||
                 (relative.size() >= 3 && relative.compare(relative.size() - 3, 3, "/..") == 0);
  if (escapes) fail(TGIR_ERR_BAD_BUNDLE, dir + "/manifest.json: file name '" + relative + "' leaves the bundle");
  return dir + "/" + relative;
}

const GraphInfo& Bundle::graph(const std::string& name) const {
  auto it = graphs.find(name);
  if (it == graphs.end()) fail(TGIR_ERR_BAD_BUNDLE, dir + "/manifest.json: no graph '" + name + "'");
  return it->second;
}

std::string Bundle::fingerprint(const std::string& backend_name) const {
  std::string prec = precision, file = graph("image_encoder").file;
  if (backend_name == "aoti" && precision != "fp32") {  // AOTI graphs are compiled from the FP32 model
    prec = "fp32";
    const auto ptr = nlohmann::json::json_pointer("/aoti/graphs/image_encoder/file");
    file = manifest.contains(ptr) && manifest.at(ptr).is_string() ? manifest.at(ptr).get<std::string>() : "";
  }
  auto sha = files.count(file) ? files.at(file) : std::string();
  return config_digest.substr(0, 16) + "-" + prec + "-" + sha.substr(0, 16);
}

Bundle Bundle::open(const std::string& dir_in, bool verify) {
  Bundle b;
  b.dir = dir_in.size() > 1 && dir_in.back() == '/' ? dir_in.substr(0, dir_in.size() - 1) : dir_in;
  const std::string where = b.dir + "/manifest.json";
  std::string text;
  try {
    text = read_file(where);
  } catch (const Error& err) {
    if (err.status() == TGIR_ERR_NOT_FOUND) fail(TGIR_ERR_NOT_FOUND, b.dir + ": not a tgir bundle (no manifest.json)");
    throw;
  }
  b.manifest = parse_json(text, where);
  const auto& m = b.manifest;
  check_schema(m, where);
  const auto& graphs = member(m, "graphs", where);
  if (!graphs.is_object() || graphs.empty()) fail(TGIR_ERR_BAD_BUNDLE, where + ": 'graphs' must map graph names to contracts");
  for (auto it = graphs.begin(); it != graphs.end(); ++it)
    b.graphs[it.key()] = graph_info(it.value(), where + " graph '" + it.key() + "'");
  if (string_member(m, "contract_sha256", where) != sha256_hex(python_json_dumps(graphs)))
    fail(TGIR_ERR_BAD_BUNDLE, where + ": the graphs' I/O contract was edited after the bundle was written "
                              "(its digest differs); re-export the bundle instead of editing manifest.json");
  for (const char* name : {"image_encoder", "text_encoder", "composer"}) b.graph(name);
  check_files(b, member(m, "files", where), verify);
  b.precision = string_member(m, "precision", where);
  b.backend = string_member(m, "backend", where);
  const auto& model = member(m, "model", where);
  b.family = string_member(model, "family", where);
  b.config_digest = string_member(model, "config_digest", where);
  b.preprocess = Preprocess::from_json(member(m, "preprocess", where), where);
  const auto& tok = member(m, "tokenizer", where);
  const std::string vocab_path = b.path(string_member(tok, "vocab_file", where));
  b.vocab = Vocabulary::from_json_text(read_file(vocab_path), vocab_path);
  const auto& ids = b.graph("text_encoder").inputs;
  if (ids.empty() || ids[0].shape.size() != 2 || ids[0].shape[1] <= 0 || ids[0].shape[1] > kMaxTextLength)
    fail(TGIR_ERR_BAD_BUNDLE, where + ": the text graph's first input must be ids [batch, L] with a fixed L in [1, " +
                                  std::to_string(kMaxTextLength) + "]");
  b.text_length = static_cast<size_t>(ids[0].shape[1]);
  return b;
}

}  // namespace tgir
