// tvmnas-run: run a tvmnas deploy bundle (manifest.json + compiled TVM module) without Python.
//
//   tvmnas-run BUNDLE_DIR INPUT.npy [--warmup N] [--repeat N] [--json]
//
// Checks every bundle file against the manifest's sha256, loads the module into the Relax VM, runs the input
// (a float32 .npy of the manifest's input shape), prints the top class and the latency: N warm-up runs first,
// then the median and minimum of the repeated runs. Bad input: one line on stderr, exit status 2.

// Only tvm-ffi headers are used (the apache-tvm wheel's runtime headers are incomplete); the runtime's own
// functions are reached through its global function registry.
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "sha256.h"

namespace ffi = tvm::ffi;

namespace {

[[noreturn]] void Fail(const std::string& message) {
  std::cerr << "tvmnas-run: error: " << message << std::endl;
  std::exit(2);
}

std::string ReadFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail(what + " " + path + " is missing");
  std::ostringstream data;
  data << in.rdbuf();
  return data.str();
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text;
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? "x" : "") + std::to_string(shape[i]);
  return text;
}

struct Npy {
  std::vector<int64_t> shape;
  std::string data;
};

// A C-ordered little-endian float32 array in .npy format (versions 1 to 3).
Npy ReadNpy(const std::string& path) {
  const std::string bytes = ReadFile(path, "input file");
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) Fail(path + " is not a .npy file");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    offset = 10;
  } else {
    if (bytes.size() < 12) Fail(path + " is not a .npy file");
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  }
  if (offset + header_len > bytes.size()) Fail(path + " has a truncated .npy header");
  const std::string header = bytes.substr(offset, header_len);
  if (header.find("'descr': '<f4'") == std::string::npos) Fail(path + " must hold float32 ('<f4') data");
  if (header.find("'fortran_order': False") == std::string::npos) Fail(path + " must be C-ordered");
  const size_t open = header.find('(', header.find("'shape'"));
  const size_t close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) Fail(path + " has no shape in its header");
  Npy npy;
  std::stringstream dims(header.substr(open + 1, close - open - 1));
  std::string dim;
  while (std::getline(dims, dim, ',')) {
    if (dim.find_first_not_of(" ") != std::string::npos) npy.shape.push_back(std::stoll(dim));
  }
  int64_t count = 1;
  for (int64_t d : npy.shape) count *= d;
  npy.data = bytes.substr(offset + header_len);
  if (npy.data.size() != static_cast<size_t>(count) * 4) Fail(path + " holds fewer values than its shape says");
  return npy;
}

struct Manifest {
  std::string module_file;
  std::vector<std::string> gpu_binaries;  // <module>.<source key>.fatbin: compiled GPU code, by CUDA source
  std::string device;
  std::vector<int64_t> input_shape;
  int64_t threads = 0;
  std::vector<std::string> classes;
};

// Parses manifest.json and checks every listed file against its sha256.
Manifest LoadBundle(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  ffi::String error;
  ffi::json::Value root = ffi::json::Parse(ReadFile(path, "bundle manifest"), &error);
  if (!error.empty()) Fail(path + " is not valid JSON: " + std::string(error));
  auto obj = root.try_cast<ffi::Map<ffi::String, ffi::Any>>();
  if (!obj || !obj->count("format") || (*obj)["format"].cast<ffi::String>() != "tvmnas-bundle") {
    Fail(path + " is not a tvmnas bundle manifest");
  }
  try {
    Manifest m;
    auto files = (*obj)["files"].cast<ffi::Map<ffi::String, ffi::Any>>();
    for (const auto& kv : files) {
      const std::string name(kv.first);
      const std::string want(kv.second.cast<ffi::Map<ffi::String, ffi::Any>>()["sha256"].cast<ffi::String>());
      if (tvmnas::Sha256Hex(ReadFile(dir + "/" + name, "bundle file")) != want) {
        Fail("bundle file " + dir + "/" + name + " does not match its sha256 in the manifest (altered?)");
      }
    }
    m.module_file = std::string((*obj)["module"].cast<ffi::String>());
    m.device = std::string((*obj)["device"].cast<ffi::String>());
    m.threads = (*obj)["threads"].cast<int64_t>();
    auto input = (*obj)["input"].cast<ffi::Map<ffi::String, ffi::Any>>();
    for (const auto& d : input["shape"].cast<ffi::Array<ffi::Any>>()) m.input_shape.push_back(d.cast<int64_t>());
    for (const auto& c : (*obj)["classes"].cast<ffi::Array<ffi::Any>>()) m.classes.push_back(std::string(c.cast<ffi::String>()));
    if (obj->count("gpu_binaries")) {
      for (const auto& b : (*obj)["gpu_binaries"].cast<ffi::Array<ffi::Any>>()) {
        m.gpu_binaries.push_back(std::string(b.cast<ffi::String>()));
      }
    }
    return m;
  } catch (const ffi::Error& err) {
    Fail(path + " lacks a field or has one of the wrong type: " + std::string(err.message()));
  }
}

// TVM's CUDA runtime keeps this build's GPU code as source and asks `tvm_callback_cuda_compile` to compile it
// when the module loads. Answer with the bundle's fatbin compiled at export for that source (keyed by the
// first 16 hex digits of the source's sha256), so the GPU machine needs no CUDA compiler.
void RegisterGpuBinaries(const std::string& dir, const Manifest& m) {
  auto binaries = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  for (const auto& name : m.gpu_binaries) {
    const size_t end = name.rfind(".fatbin"), start = name.rfind('.', end - 1);
    binaries->emplace_back(name.substr(start + 1, end - start - 1), ReadFile(dir + "/" + name, "bundle file"));
  }
  ffi::Function::SetGlobal(
      "tvm_callback_cuda_compile",
      ffi::Function::FromTyped([binaries](ffi::String source) -> ffi::Bytes {
        const std::string key = tvmnas::Sha256Hex(std::string(source)).substr(0, 16);
        for (const auto& [k, data] : *binaries) {
          if (k == key) return ffi::Bytes(data);
        }
        Fail("the bundle holds no compiled GPU code for a CUDA module of its model (source key " + key + ")");
      }),
      true);
}

int ParseCount(const char* flag, const char* value) {
  char* end = nullptr;
  long n = value ? std::strtol(value, &end, 10) : -1;
  if (!value || *end != '\0' || n < 0) Fail(std::string(flag) + " needs a non-negative integer");
  return static_cast<int>(n);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  int warmup = 10, repeat = 100;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--warmup") warmup = ParseCount("--warmup", i + 1 < argc ? argv[++i] : nullptr);
    else if (arg == "--repeat") repeat = ParseCount("--repeat", i + 1 < argc ? argv[++i] : nullptr);
    else if (arg == "--json") json = true;
    else if (arg == "-h" || arg == "--help") {
      std::cout << "usage: tvmnas-run BUNDLE_DIR INPUT.npy [--warmup N] [--repeat N] [--json]\n";
      return 0;
    } else positional.push_back(arg);
  }
  if (positional.size() != 2) Fail("usage: tvmnas-run BUNDLE_DIR INPUT.npy [--warmup N] [--repeat N] [--json]");
  if (repeat < 1) Fail("--repeat must be at least 1");
  const Manifest manifest = LoadBundle(positional[0]);
  const Npy input = ReadNpy(positional[1]);
  if (input.shape != manifest.input_shape) {
    Fail("input " + positional[1] + " has shape " + ShapeText(input.shape) + ", the model expects " +
         ShapeText(manifest.input_shape));
  }
  if (manifest.threads > 0 && !std::getenv("TVM_NUM_THREADS")) {
    // the thread count the latencies were measured with; read when TVM's thread pool starts
    setenv("TVM_NUM_THREADS", std::to_string(manifest.threads).c_str(), 1);
  }
  DLDevice dev{manifest.device == "cuda" ? kDLCUDA : kDLCPU, 0};
  // The CUDA part of the runtime is a library of its own that needs the CUDA driver; load it only when asked
  // (found through the executable's run path: the wheel's lib folder, or beside the executable).
  if (dev.device_type == kDLCUDA) {
    if (!dlopen("libtvm_runtime_cuda.so", RTLD_NOW | RTLD_GLOBAL)) {
      Fail(std::string("cannot load the TVM CUDA runtime: ") + dlerror());
    }
    RegisterGpuBinaries(positional[0], manifest);
  }
  try {
    ffi::Module lib = ffi::Module::LoadFromFile(positional[0] + "/" + manifest.module_file);
    ffi::Module vm = (*lib->GetFunction("vm_load_executable"))().cast<ffi::Module>();
    const int pooled = 2;
    if (dev.device_type == kDLCPU) (*vm->GetFunction("vm_initialization"))(dev.device_type, 0, pooled);
    else (*vm->GetFunction("vm_initialization"))(dev.device_type, 0, pooled, kDLCPU, 0, pooled);
    ffi::Function main_fn = *vm->GetFunction("main");

    auto alloc = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope");
    auto copy_from = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
    auto copy_to = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyToBytes");
    auto sync = ffi::Function::GetGlobalRequired("runtime.Device_StreamSync");
    ffi::Tensor data = alloc(ffi::Shape(input.shape), DLDataType{kDLFloat, 32, 1}, dev, ffi::Optional<ffi::String>())
                           .cast<ffi::Tensor>();
    copy_from(data, static_cast<void*>(const_cast<char*>(input.data.data())), input.data.size());
    auto run = [&]() {
      ffi::Any out = main_fn(data);
      if (auto arr = out.try_cast<ffi::Array<ffi::Any>>()) out = (*arr)[0];
      auto result = out.cast<ffi::Tensor>();
      sync(dev, static_cast<int64_t>(0));  // the default stream
      return result;
    };
    for (int i = 0; i < warmup; ++i) run();
    std::vector<double> ms;
    ffi::Tensor logits;
    for (int i = 0; i < repeat; ++i) {
      auto start = std::chrono::steady_clock::now();
      logits = run();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    std::vector<float> scores(logits.shape()[logits.ndim() - 1]);
    copy_to(logits, static_cast<void*>(scores.data()), scores.size() * sizeof(float));
    const size_t top = std::max_element(scores.begin(), scores.end()) - scores.begin();
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2], fastest = ms.front();
    const std::string name = top < manifest.classes.size() ? manifest.classes[top] : std::to_string(top);
    if (json) {
      std::printf("{\"top_class\": %zu, \"top_name\": \"%s\", \"score\": %.6g, \"median_ms\": %.6f, "
                  "\"min_ms\": %.6f, \"repeat\": %d, \"warmup\": %d}\n",
                  top, name.c_str(), scores[top], median, fastest, repeat, warmup);
    } else {
      std::printf("top class: %zu (%s), score %.4g\n", top, name.c_str(), scores[top]);
      std::printf("latency: median %.4f ms, min %.4f ms over %d runs after %d warm-up runs (%s, %lld threads)\n",
                  median, fastest, repeat, warmup, manifest.device.c_str(),
                  static_cast<long long>(manifest.threads));
    }
  } catch (const ffi::Error& err) {
    Fail("running the module failed: " + std::string(err.message()));
  }
  return 0;
}
