// tvmnas-run: run a tvmnas deploy bundle (manifest.json + compiled TVM module) without Python.
//
//   tvmnas-run BUNDLE_DIR INPUT.npy [--span-s S] [--windows N] [--json]
//
// Checks every bundle file against the manifest's sha256, loads the module into the Relax VM, runs the input
// (a float32 .npy of the manifest's input shape), prints the top class and the latency. The latency is taken
// with tvmnas's measurement protocol (tvmnas/measure/protocol.py), with the settings the manifest records:
// windows of the model alternate with windows of the bundle's reference module over at least the protocol's
// span; windows beside an unusually slow reference window are dropped (and measured again); the estimate is a
// low quantile of the kept windows, scaled by the reference's speed against the latency database's anchor; where
// the bundle has the space's reference network, the model is timed in turn with it and scaled by it instead.
// --span-s and --windows override the manifest's span and window count. Bad input: one line on stderr, exit 2.

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
#include <cmath>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
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

// The measurement protocol's settings, as the manifest records them (see tvmnas/measure/protocol.py).
struct Protocol {
  double sample_ms = 2.0;
  int64_t samples_per_window = 5;
  int64_t windows = 100;
  double min_span_s = 10.0;
  double max_span_s = 0.0;  // keep measuring dropped windows again until the run lasts this long
  double slow_factor = 1.15;
  double min_kept = 0.25;
  double max_extra_rounds = 0.25;
  double quantile = 0.05;
  double max_dispersion = 0.1;
  double warmup_ms = 100.0;
};

struct Manifest {
  std::string module_file;
  std::string reference_file;  // empty for bundles made before the protocol had a reference module
  double anchor_ms = 0.0;      // 0: no anchor (speed 1)
  // the space's reference network, when the export scaled by it (tvmnas/reference_network.py): empty file if not
  std::string network_file;
  std::vector<int64_t> network_shape;
  double network_anchor_ms = 0.0;
  Protocol protocol;
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
    auto latency = (*obj)["latency"].cast<ffi::Map<ffi::String, ffi::Any>>();
    if (latency.count("protocol")) {
      auto p = latency["protocol"].cast<ffi::Map<ffi::String, ffi::Any>>();
      Protocol& q = m.protocol;
      q.sample_ms = p["sample_ms"].cast<double>();
      q.samples_per_window = p["samples_per_window"].cast<int64_t>();
      q.windows = p["windows"].cast<int64_t>();
      q.min_span_s = p["min_span_s"].cast<double>();
      if (p.count("max_span_s")) q.max_span_s = p["max_span_s"].cast<double>();  // older bundles lack it
      q.slow_factor = p["slow_factor"].cast<double>();
      q.min_kept = p["min_kept"].cast<double>();
      q.max_extra_rounds = p["max_extra_rounds"].cast<double>();
      q.quantile = p["quantile"].cast<double>();
      q.max_dispersion = p["max_dispersion"].cast<double>();
      q.warmup_ms = p["warmup_ms"].cast<double>();
      auto ref = latency["reference"].cast<ffi::Map<ffi::String, ffi::Any>>();
      m.reference_file = std::string(ref["file"].cast<ffi::String>());
      if (ref["anchor_ms"] != nullptr) m.anchor_ms = ref["anchor_ms"].cast<double>();
      if (ref.count("network")) {
        auto net = ref["network"].cast<ffi::Map<ffi::String, ffi::Any>>();
        m.network_file = std::string(net["file"].cast<ffi::String>());
        for (const auto& d : net["input_shape"].cast<ffi::Array<ffi::Any>>()) {
          m.network_shape.push_back(d.cast<int64_t>());
        }
        m.network_anchor_ms = net["anchor_ms"].cast<double>();
      }
    }
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

double ParseNumber(const char* flag, const char* value, double minimum) {
  char* end = nullptr;
  double x = value ? std::strtod(value, &end) : -1;
  if (!value || *end != '\0' || !(x >= minimum)) {
    Fail(std::string(flag) + " needs a number >= " + std::to_string(static_cast<int>(minimum)));
  }
  return x;
}

// Linear-interpolated quantile of a non-empty vector (numpy's default method), like the Python protocol's.
double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t low = static_cast<size_t>(pos), high = std::min(low + 1, v.size() - 1);
  return v[low] + (v[high] - v[low]) * (pos - low);
}

// A module loaded into the Relax VM with its inputs; times windows of back-to-back calls.
struct Timed {
  std::function<void()> call;
  int64_t calls = 1;

  // Runs the module untimed for about ms milliseconds; returns milliseconds per call.
  double WarmUp(double ms) {
    int64_t n = 0;
    const auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    do {
      call();
      ++n;
      elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    } while (elapsed < ms);
    return elapsed / n;
  }
  // The median over `samples` samples of the milliseconds per call of `calls` back-to-back calls.
  double Window(int64_t samples) {
    std::vector<double> per_call;
    for (int64_t s = 0; s < samples; ++s) {
      const auto start = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < calls; ++i) call();
      per_call.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / calls);
    }
    return Quantile(per_call, 0.5);
  }
};

struct Result {
  double latency_ms, raw_ms, dispersion, speed, seconds;
  int64_t windows, dropped;
  std::string flag;
  bool too_few = false;  // the flag says too few windows fell outside slow phases
  // the estimate (unscaled) on the kept windows in each quarter of the run's sequence of windows (the same spans
  // for every model; -1: under two windows there), as Estimate.quarters_raw_ms
  std::vector<double> quarters_raw;
};

std::string DispersionFlag(double dispersion, double max_dispersion) {
  return "noisy: the estimate moves by +/-" + std::to_string(std::lround(dispersion * 100)) +
         "% between quarters of the run, over +/-" + std::to_string(std::lround(max_dispersion * 100)) + "%";
}

// The single-network protocol over one or more models (the network, and the bundle's reference network when it
// has one): each round visits the models in an order rotated by the round, with a reference window before the
// first and after every model window; a model window beside a reference window above slow_factor x the
// reference's typical latency (the run's median, or the anchor where lower) is dropped, and a model that keeps too
// few windows is measured again in extra rounds (up to max_span_s). Mirrors measure_interleaved.
std::vector<Result> Measure(const std::vector<Timed*>& models, Timed* reference, const Protocol& p, double anchor_ms) {
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  auto calibrate = [&](Timed* t) {
    t->calls = std::max<int64_t>(1, std::llround(p.sample_ms / std::max(t->WarmUp(p.warmup_ms), 1e-6)));
  };
  for (Timed* m : models) calibrate(m);
  if (reference) calibrate(reference);
  const int64_t n = static_cast<int64_t>(models.size());
  std::vector<std::pair<int64_t, double>> log;  // (model index, or -1 for the reference; window value) in time order
  auto round = [&](const std::vector<int64_t>& which, int64_t index) {
    const int64_t count = static_cast<int64_t>(which.size());
    for (int64_t j = 0; j < count; ++j) {
      const int64_t i = which[(j + index) % count];
      if (reference && log.empty()) log.emplace_back(-1, reference->Window(p.samples_per_window));
      log.emplace_back(i, models[i]->Window(p.samples_per_window));
      if (reference) log.emplace_back(-1, reference->Window(p.samples_per_window));
    }
  };
  // per model: (position, value, slow) of its windows; the reference's (position, value); their quantile
  struct Win { size_t pos; double value; bool slow; };
  std::vector<std::vector<Win>> wins(n);
  std::vector<std::pair<size_t, double>> refs;
  double ref_ms = 0;
  auto classify = [&] {
    for (auto& w : wins) w.clear();
    refs.clear();
    for (size_t k = 0; k < log.size(); ++k) {
      if (log[k].first < 0) refs.emplace_back(k, log[k].second);
    }
    std::vector<double> ref_values;
    for (auto& r : refs) ref_values.push_back(r.second);
    double typical = refs.empty() ? 0 : Quantile(ref_values, 0.5);
    if (anchor_ms > 0) typical = std::min(typical, anchor_ms);
    const double limit = typical * p.slow_factor;
    std::vector<double> quick;  // the reference outside slow phases: the time the kept windows come from
    for (double v : ref_values) {
      if (v <= limit) quick.push_back(v);
    }
    ref_ms = refs.empty() ? 0 : Quantile(quick.empty() ? ref_values : quick, p.quantile);
    for (size_t k = 0; k < log.size(); ++k) {
      if (log[k].first < 0) continue;
      bool slow = false;
      if (!refs.empty()) {
        if (k > 0 && log[k - 1].first < 0 && log[k - 1].second > limit) slow = true;
        if (k + 1 < log.size() && log[k + 1].first < 0 && log[k + 1].second > limit) slow = true;
      }
      wins[log[k].first].push_back({k, log[k].second, slow});
    }
  };
  std::vector<int64_t> all(n);
  for (int64_t i = 0; i < n; ++i) all[i] = i;
  int64_t rounds = 0;
  while (rounds < p.windows || seconds() < p.min_span_s) round(all, rounds++);
  classify();
  const int64_t needed = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(p.min_kept * p.windows)));
  auto short_models = [&] {
    std::vector<int64_t> out;
    for (int64_t i = 0; i < n; ++i) {
      if (std::count_if(wins[i].begin(), wins[i].end(), [](const Win& w) { return !w.slow; }) < needed) {
        out.push_back(i);
      }
    }
    return out;
  };
  for (int64_t extra = 0; reference && (extra < std::ceil(p.max_extra_rounds * p.windows) || seconds() < p.max_span_s);
       ++extra) {
    const std::vector<int64_t> which = short_models();
    if (which.empty()) break;
    round(which, rounds++);
    classify();
  }
  const double speed = (anchor_ms > 0 && ref_ms > 0) ? ref_ms / anchor_ms : 1.0;
  std::vector<Result> results;
  for (int64_t i = 0; i < n; ++i) {
    Result r{};
    std::vector<std::pair<size_t, double>> kept;
    for (auto& w : wins[i]) {
      if (!w.slow) kept.emplace_back(w.pos, w.value);
    }
    r.dropped = static_cast<int64_t>(wins[i].size() - kept.size());
    if (static_cast<int64_t>(kept.size()) < needed) {
      r.flag = "noisy: only " + std::to_string(kept.size()) + " of " + std::to_string(wins[i].size()) +
               " windows fell outside slow phases of the reference; the estimate uses every window";
      r.too_few = true;
      kept.clear();
      for (auto& w : wins[i]) kept.emplace_back(w.pos, w.value);
    }
    std::vector<double> values;
    for (auto& k : kept) values.push_back(k.second);
    r.raw_ms = Quantile(values, p.quantile);
    // dispersion: half the range of the same estimate over the run's quarters (each scaled by its reference)
    std::vector<double> quarters;
    if (kept.size() >= 8) {
      for (int q = 0; q < 4; ++q) {
        const size_t from = std::lround(q * kept.size() / 4.0), to = std::lround((q + 1) * kept.size() / 4.0);
        std::vector<double> chunk, near;
        for (size_t j = from; j < to; ++j) chunk.push_back(kept[j].second);
        for (auto& ref : refs) {
          if (ref.first + 1 >= kept[from].first && ref.first <= kept[to - 1].first + 1) near.push_back(ref.second);
        }
        const double scale = (!near.empty() && ref_ms > 0) ? ref_ms / Quantile(near, p.quantile) : 1.0;
        quarters.push_back(Quantile(chunk, p.quantile) * scale);
      }
    }
    r.dispersion = quarters.empty() ? 0.0
        : (*std::max_element(quarters.begin(), quarters.end()) - *std::min_element(quarters.begin(), quarters.end())) /
              2 / r.raw_ms;
    if (r.flag.empty() && r.dispersion > p.max_dispersion) r.flag = DispersionFlag(r.dispersion, p.max_dispersion);
    for (size_t q = 0; q < 4; ++q) {
      std::vector<double> span;
      for (auto& k : kept) {
        if (q * log.size() <= 4 * k.first && 4 * k.first < (q + 1) * log.size()) span.push_back(k.second);
      }
      r.quarters_raw.push_back(span.size() >= 2 ? Quantile(span, p.quantile) : -1.0);
    }
    r.speed = speed;
    r.latency_ms = r.raw_ms / speed;
    r.windows = static_cast<int64_t>(kept.size());
    r.seconds = seconds();
    results.push_back(r);
  }
  return results;
}

// A JSON string literal.
std::string Quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage = "usage: tvmnas-run BUNDLE_DIR INPUT.npy [--span-s S] [--windows N] [--json]";
  std::vector<std::string> positional;
  double span_s = -1, windows = -1;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--span-s") span_s = ParseNumber("--span-s", i + 1 < argc ? argv[++i] : nullptr, 0);
    else if (arg == "--windows") windows = ParseNumber("--windows", i + 1 < argc ? argv[++i] : nullptr, 1);
    else if (arg == "--json") json = true;
    else if (arg == "-h" || arg == "--help") {
      std::cout << usage << "\n";
      return 0;
    } else positional.push_back(arg);
  }
  if (positional.size() != 2) Fail(usage);
  Manifest manifest = LoadBundle(positional[0]);
  if (span_s >= 0) manifest.protocol.min_span_s = span_s;
  if (windows >= 1) manifest.protocol.windows = static_cast<int64_t>(windows);
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
    auto alloc = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope");
    auto copy_from = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
    auto copy_to = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyToBytes");
    auto sync = ffi::Function::GetGlobalRequired("runtime.Device_StreamSync");
    auto tensor = [&](const std::vector<int64_t>& shape, const void* data, size_t bytes) {
      ffi::Tensor t = alloc(ffi::Shape(shape), DLDataType{kDLFloat, 32, 1}, dev, ffi::Optional<ffi::String>())
                          .cast<ffi::Tensor>();
      copy_from(t, const_cast<void*>(data), bytes);
      return t;
    };
    // `main` of a module file, loaded into the Relax VM on the device
    auto load_main = [&](const std::string& file) {
      ffi::Module lib = ffi::Module::LoadFromFile(positional[0] + "/" + file);
      ffi::Module vm = (*lib->GetFunction("vm_load_executable"))().cast<ffi::Module>();
      const int pooled = 2;
      if (dev.device_type == kDLCPU) (*vm->GetFunction("vm_initialization"))(dev.device_type, 0, pooled);
      else (*vm->GetFunction("vm_initialization"))(dev.device_type, 0, pooled, kDLCPU, 0, pooled);
      return std::make_pair(lib, vm);
    };
    auto model_vm = load_main(manifest.module_file);
    ffi::Function main_fn = *model_vm.second->GetFunction("main");
    ffi::Tensor data = tensor(input.shape, input.data.data(), input.data.size());
    auto run = [&]() {
      ffi::Any out = main_fn(data);
      if (auto arr = out.try_cast<ffi::Array<ffi::Any>>()) out = (*arr)[0];
      auto result = out.cast<ffi::Tensor>();
      sync(dev, static_cast<int64_t>(0));  // the default stream
      return result;
    };
    ffi::Tensor logits = run();
    Timed model{[&] { run(); }};
    std::unique_ptr<Timed> reference;
    std::optional<std::pair<ffi::Module, ffi::Module>> ref_vm;
    std::optional<ffi::Tensor> ref_a, ref_b;
    if (!manifest.reference_file.empty()) {  // the reference's inputs: fixed pseudo-random values
      ref_vm = load_main(manifest.reference_file);
      std::vector<float> values(64 * 128);
      for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.f;
      ref_a = tensor({64, 128}, values.data(), values.size() * 4);
      ref_b = tensor({128, 64}, values.data(), values.size() * 4);
      ffi::Function ref_fn = *ref_vm->second->GetFunction("main");
      reference = std::make_unique<Timed>(Timed{[&, ref_fn] {
        ref_fn(*ref_a, *ref_b);
        sync(dev, static_cast<int64_t>(0));
      }});
    }
    std::vector<Timed*> models{&model};
    std::optional<std::pair<ffi::Module, ffi::Module>> net_vm;
    std::optional<ffi::Tensor> net_input;
    std::unique_ptr<Timed> network;
    if (!manifest.network_file.empty()) {  // the reference network's input: fixed pseudo-random values
      net_vm = load_main(manifest.network_file);
      int64_t size = 1;
      for (int64_t d : manifest.network_shape) size *= d;
      std::vector<float> values(size);
      for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.f;
      net_input = tensor(manifest.network_shape, values.data(), values.size() * 4);
      ffi::Function net_fn = *net_vm->second->GetFunction("main");
      network = std::make_unique<Timed>(Timed{[&, net_fn] {
        net_fn(*net_input);
        sync(dev, static_cast<int64_t>(0));
      }});
      models.push_back(network.get());
    }
    const std::vector<Result> results = Measure(models, reference.get(), manifest.protocol, manifest.anchor_ms);
    Result r = results[0];
    if (network) {  // the ratio to the reference network, times its latency at the anchor's speed
      const Result& other = results[1];  // judged by how the ratio moves between quarters (see ratio_estimate)
      r.speed = other.raw_ms / manifest.network_anchor_ms;
      r.latency_ms = r.raw_ms / r.speed;
      const double ratio = r.raw_ms / other.raw_ms;
      std::vector<double> ratios;
      for (size_t q = 0; q < 4; ++q) {
        const double mine = r.quarters_raw[q], theirs = other.quarters_raw[q];
        if (mine > 0 && theirs > 0) ratios.push_back(mine / theirs);
      }
      r.dispersion = ratios.size() >= 2
          ? (*std::max_element(ratios.begin(), ratios.end()) - *std::min_element(ratios.begin(), ratios.end())) / 2 /
                ratio
          : std::max(r.dispersion, other.dispersion);
      const double limit = manifest.protocol.max_dispersion;
      r.flag = r.too_few ? r.flag
               : other.too_few ? "the reference's estimate is doubtful: " + other.flag
               : r.dispersion > limit ? DispersionFlag(r.dispersion, limit) : "";
    }
    // every element (a block's output is a feature map); the top index is into the flattened output, a class
    // for a network at batch 1, as bundles are exported
    size_t elements = 1;
    for (int i = 0; i < logits.ndim(); ++i) elements *= logits.shape()[i];
    std::vector<float> scores(elements);
    copy_to(logits, static_cast<void*>(scores.data()), scores.size() * sizeof(float));
    const size_t top = std::max_element(scores.begin(), scores.end()) - scores.begin();
    const std::string name = top < manifest.classes.size() ? manifest.classes[top] : std::to_string(top);
    if (json) {
      std::printf("{\"top_class\": %zu, \"top_name\": %s, \"score\": %.6g, \"latency_ms\": %.6f, \"raw_ms\": %.6f, "
                  "\"dispersion\": %.4f, \"windows\": %lld, \"dropped_windows\": %lld, \"speed\": %.4f, "
                  "\"seconds\": %.2f, \"flag\": %s}\n",
                  top, Quoted(name).c_str(), scores[top], r.latency_ms, r.raw_ms, r.dispersion,
                  static_cast<long long>(r.windows), static_cast<long long>(r.dropped), r.speed, r.seconds,
                  r.flag.empty() ? "null" : Quoted(r.flag).c_str());
    } else {
      std::printf("top class: %zu (%s), score %.4g\n", top, name.c_str(), scores[top]);
      std::printf("latency: %.4f ms +/-%.0f%% (%lld windows over %.1f s, %lld dropped in slow phases; device at "
                  "%.2fx the speed of its profile; %s, %lld threads)\n",
                  r.latency_ms, r.dispersion * 100, static_cast<long long>(r.windows), r.seconds,
                  static_cast<long long>(r.dropped), r.speed, manifest.device.c_str(),
                  static_cast<long long>(manifest.threads));
      if (!r.flag.empty()) std::printf("flagged: %s\n", r.flag.c_str());
    }
  } catch (const ffi::Error& err) {
    Fail("running the module failed: " + std::string(err.message()));
  }
  return 0;
}
