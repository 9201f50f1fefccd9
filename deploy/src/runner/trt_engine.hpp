// A deserialized TensorRT engine and its execution context: every TensorRT call of the runner is here.
//
// TensorRT >= 8.5 addresses I/O tensors by name (getNbIOTensors, getIOTensorName, getTensorShape,
// setInputShape, setTensorAddress, enqueueV3); TensorRT 10 removed the older bindings API. TensorRT 8.2
// (JetPack 4.6, the last for the Jetson Nano) has only bindings (getNbBindings, setBindingDimensions,
// enqueueV2). NV_TENSORRT_MAJOR/MINOR pick one at compile time; the rest of the runner sees TensorInfo only.
// C++ API: https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/c-api/index.html
// 8.x -> 10 migration: https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration-guide.html
#pragma once

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "edgecompress/shapes.hpp"
#include "edgecompress/tensor_files.hpp"

#define EC_TRT_AT_LEAST(major, minor) \
  (NV_TENSORRT_MAJOR > (major) || (NV_TENSORRT_MAJOR == (major) && NV_TENSORRT_MINOR >= (minor)))
#define EC_TRT_NAMED_TENSORS EC_TRT_AT_LEAST(8, 5)

namespace ec {
namespace trt {

/// Prints TensorRT's warnings and errors to stderr and keeps the last error for our messages.
class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* message) noexcept override;
  const std::string& last_error() const { return last_error_; }

 private:
  std::string last_error_;
};

/// One input or output of the engine.
struct TensorInfo {
  std::string name;
  bool is_input = false;
  Shape engine_shape;  // -1 marks a dynamic dimension
  nvinfer1::DataType type = nvinfer1::DataType::kFLOAT;
  int binding = -1;    // the binding index (TensorRT 8.2's API), else unused
};

class Engine {
 public:
  /// Deserializes the engine file's bytes and creates an execution context. UserError when TensorRT
  /// cannot read it (built by another TensorRT version or for another GPU).
  Engine(const std::string& path, const std::vector<char>& blob, Logger& logger);

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  std::vector<std::string> input_names() const;

  /// Sets a dynamic input's shape; UserError naming the profile's range when the engine refuses it.
  void set_input_shape(const TensorInfo& tensor, const Shape& shape);
  /// The shape `tensor` runs with once every input shape is set.
  Shape runtime_shape(const TensorInfo& tensor) const;
  void set_address(const TensorInfo& tensor, void* device_memory);
  /// Enqueues one inference on `stream`; std::runtime_error when TensorRT refuses.
  void enqueue(cudaStream_t stream);

 private:
  std::string profile_range(const TensorInfo& tensor) const;

  Logger& logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::vector<TensorInfo> tensors_;
  std::vector<void*> bindings_;  // TensorRT 8.2's enqueueV2 takes one pointer per binding
};

/// The TensorRT version the runner was compiled against, "8.2.1".
std::string version();

/// "float32", "float16", "int8", ... for the report and messages.
std::string type_name(nvinfer1::DataType type);

/// Bytes per element; UserError for packed sub-byte types the runner does not size.
std::size_t type_size(nvinfer1::DataType type);

/// The element type the runner feeds an input of `type` with, if it can (float32 and float16).
std::optional<ElementType> feedable_type(nvinfer1::DataType type);

}  // namespace trt
}  // namespace ec
