#include "trt_engine.hpp"

#include <iostream>
#include <stdexcept>
#include <type_traits>

#ifdef EC_HAVE_NVINFER_PLUGIN
#include <NvInferPlugin.h>
#endif

#include "edgecompress/errors.hpp"

namespace ec {
namespace trt {

namespace {

using DimValue = std::remove_reference_t<decltype(std::declval<nvinfer1::Dims&>().d[0])>;  // int32 in 8.x, int64 from 10

Shape to_shape(const nvinfer1::Dims& dims) {
  Shape shape;
  for (int i = 0; i < dims.nbDims; ++i) shape.push_back(static_cast<std::int64_t>(dims.d[i]));
  return shape;
}

nvinfer1::Dims to_dims(const Shape& shape) {
  nvinfer1::Dims dims{};
  if (shape.size() > static_cast<std::size_t>(nvinfer1::Dims::MAX_DIMS)) {
    throw UserError("shape " + format_shape(shape) + " has more dimensions than TensorRT allows");
  }
  dims.nbDims = static_cast<decltype(dims.nbDims)>(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) dims.d[i] = static_cast<DimValue>(shape[i]);
  return dims;
}

const char* kRebuildHint = "engine built by another TensorRT version or GPU: rebuild it on this device (build_engine.sh)";

}  // namespace

void Logger::log(Severity severity, const char* message) noexcept {
  if (severity > Severity::kWARNING) return;
  const bool error = severity == Severity::kERROR || severity == Severity::kINTERNAL_ERROR;
  if (error) last_error_ = message;
  std::cerr << "[TensorRT] " << (error ? "error: " : "warning: ") << message << "\n";
}

Engine::Engine(const std::string& path, const std::vector<char>& blob, Logger& logger) : logger_(logger) {
#ifdef EC_HAVE_NVINFER_PLUGIN
  initLibNvInferPlugins(&logger_, "");  // engines that hold TensorRT's own plugins (e.g. EfficientNMS_TRT)
#endif
  runtime_.reset(nvinfer1::createInferRuntime(logger_));
  if (!runtime_) throw std::runtime_error("createInferRuntime failed: " + logger_.last_error());
  engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
  if (!engine_) {
    throw UserError("cannot deserialize " + path + ": " + kRebuildHint +
                    (logger_.last_error().empty() ? "" : " [TensorRT: " + logger_.last_error() + "]"));
  }
#if EC_TRT_NAMED_TENSORS
  for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
    const char* name = engine_->getIOTensorName(i);
    tensors_.push_back({name, engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT, to_shape(engine_->getTensorShape(name)),
                        engine_->getTensorDataType(name), -1});
  }
#else
  if (engine_->hasImplicitBatchDimension()) {
    throw UserError(path + " has an implicit batch dimension; rebuild it from the ONNX with an explicit batch (build_engine.sh)");
  }
  // With several optimization profiles each has its own bindings; the first profile's come first.
  const int per_profile = engine_->getNbBindings() / engine_->getNbOptimizationProfiles();
  for (int i = 0; i < per_profile; ++i) {
    tensors_.push_back({engine_->getBindingName(i), engine_->bindingIsInput(i), to_shape(engine_->getBindingDimensions(i)),
                        engine_->getBindingDataType(i), i});
  }
  bindings_.assign(static_cast<std::size_t>(engine_->getNbBindings()), nullptr);
#endif
  context_.reset(engine_->createExecutionContext());
  if (!context_) {
    throw std::runtime_error("createExecutionContext failed (out of GPU memory?): " + logger_.last_error());
  }
}

std::vector<std::string> Engine::input_names() const {
  std::vector<std::string> names;
  for (const TensorInfo& tensor : tensors_) {
    if (tensor.is_input) names.push_back(tensor.name);
  }
  return names;
}

std::string Engine::profile_range(const TensorInfo& tensor) const {
#if EC_TRT_NAMED_TENSORS
  const Shape low = to_shape(engine_->getProfileShape(tensor.name.c_str(), 0, nvinfer1::OptProfileSelector::kMIN));
  const Shape high = to_shape(engine_->getProfileShape(tensor.name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX));
#else
  const Shape low = to_shape(engine_->getProfileDimensions(tensor.binding, 0, nvinfer1::OptProfileSelector::kMIN));
  const Shape high = to_shape(engine_->getProfileDimensions(tensor.binding, 0, nvinfer1::OptProfileSelector::kMAX));
#endif
  return "from " + format_shape(low) + " to " + format_shape(high);
}

void Engine::set_input_shape(const TensorInfo& tensor, const Shape& shape) {
#if EC_TRT_NAMED_TENSORS
  const bool accepted = context_->setInputShape(tensor.name.c_str(), to_dims(shape));
#else
  const bool accepted = context_->setBindingDimensions(tensor.binding, to_dims(shape));
#endif
  if (!accepted) {
    throw UserError("the engine refuses shape " + format_shape(shape) + " for input '" + tensor.name + "'; its optimization profile allows " +
                    profile_range(tensor) + ": choose --shapes in that range or rebuild the engine with a wider profile");
  }
}

Shape Engine::runtime_shape(const TensorInfo& tensor) const {
#if EC_TRT_NAMED_TENSORS
  return to_shape(context_->getTensorShape(tensor.name.c_str()));
#else
  return to_shape(context_->getBindingDimensions(tensor.binding));
#endif
}

void Engine::set_address(const TensorInfo& tensor, void* device_memory) {
#if EC_TRT_NAMED_TENSORS
  if (!context_->setTensorAddress(tensor.name.c_str(), device_memory)) {
    throw std::runtime_error("setTensorAddress('" + tensor.name + "') failed: " + logger_.last_error());
  }
#else
  bindings_.at(static_cast<std::size_t>(tensor.binding)) = device_memory;
#endif
}

void Engine::enqueue(cudaStream_t stream) {
#if EC_TRT_NAMED_TENSORS
  const bool queued = context_->enqueueV3(stream);
#else
  const bool queued = context_->enqueueV2(bindings_.data(), stream, nullptr);
#endif
  if (!queued) throw std::runtime_error("TensorRT could not enqueue the inference: " + logger_.last_error());
}

std::string version() {
  return std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." + std::to_string(NV_TENSORRT_PATCH);
}

std::string type_name(nvinfer1::DataType type) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT: return "float32";
    case nvinfer1::DataType::kHALF: return "float16";
    case nvinfer1::DataType::kINT8: return "int8";
    case nvinfer1::DataType::kINT32: return "int32";
    case nvinfer1::DataType::kBOOL: return "bool";
#if EC_TRT_AT_LEAST(8, 5)
    case nvinfer1::DataType::kUINT8: return "uint8";
#endif
#if EC_TRT_AT_LEAST(8, 6)
    case nvinfer1::DataType::kFP8: return "fp8";
#endif
#if EC_TRT_AT_LEAST(9, 0)
    case nvinfer1::DataType::kBF16: return "bfloat16";
#endif
#if EC_TRT_AT_LEAST(10, 0)
    case nvinfer1::DataType::kINT64: return "int64";
#endif
    default: return "TensorRT DataType " + std::to_string(static_cast<int>(type));
  }
}

std::size_t type_size(nvinfer1::DataType type) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT:
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kHALF: return 2;
    case nvinfer1::DataType::kINT8:
    case nvinfer1::DataType::kBOOL: return 1;
#if EC_TRT_AT_LEAST(8, 5)
    case nvinfer1::DataType::kUINT8: return 1;
#endif
#if EC_TRT_AT_LEAST(8, 6)
    case nvinfer1::DataType::kFP8: return 1;
#endif
#if EC_TRT_AT_LEAST(9, 0)
    case nvinfer1::DataType::kBF16: return 2;
#endif
#if EC_TRT_AT_LEAST(10, 0)
    case nvinfer1::DataType::kINT64: return 8;
#endif
    default:
      throw UserError("the engine has a tensor of type " + type_name(type) +
                      " (packed below one byte per value), which the runner cannot size; rebuild it with byte-sized I/O types");
  }
}

std::optional<ElementType> feedable_type(nvinfer1::DataType type) {
  if (type == nvinfer1::DataType::kFLOAT) return ElementType::float32;
  if (type == nvinfer1::DataType::kHALF) return ElementType::float16;
  return std::nullopt;
}

}  // namespace trt
}  // namespace ec
