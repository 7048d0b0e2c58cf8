// The C face of libonnx: parsing, checking and reading a ModelProto. No exception leaves this file.
#include "connx.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

struct connx_model {
    onnx::ModelProto proto;
};

struct connx_tensor_file {
    onnx::TensorProto proto;
};

namespace {

char *copy_string(const std::string &text) {
    char *result = static_cast<char *>(std::malloc(text.size() + 1));
    if (result) std::memcpy(result, text.c_str(), text.size() + 1);
    return result;
}

void set_error(char **error, const std::string &text) {
    if (error) *error = copy_string(text);
}

// Parses `length` bytes into `message` (an ONNX `what`); false with `error` set when it cannot.
bool parse_bytes(google::protobuf::MessageLite &message, const void *bytes, size_t length, const char *what,
                 char **error) {
    if (length > static_cast<size_t>(std::numeric_limits<int>::max())) {
        set_error(error, "the file is larger than 2 GB, which protobuf cannot parse in one piece");
        return false;
    }
    if (!message.ParseFromArray(bytes, static_cast<int>(length))) {
        set_error(error, std::string("not a valid ONNX ") + what + " (the protobuf does not parse: truncated or damaged)");
        return false;
    }
    return true;
}

const onnx::TensorProto &tensor_of(const connx_tensor *tensor) {
    return *reinterpret_cast<const onnx::TensorProto *>(tensor);
}

const connx_tensor *handle_of(const onnx::TensorProto &tensor) {
    return reinterpret_cast<const connx_tensor *>(&tensor);
}

const onnx::ValueInfoProto &value_of(const connx_value_info *value) {
    return *reinterpret_cast<const onnx::ValueInfoProto *>(value);
}

const connx_value_info *handle_of(const onnx::ValueInfoProto &value) {
    return reinterpret_cast<const connx_value_info *>(&value);
}

const onnx::AttributeProto &attribute_of(const connx_model *model, size_t node, size_t attribute) {
    return model->proto.graph().node(static_cast<int>(node)).attribute(static_cast<int>(attribute));
}

// IEEE 754 binary16 to binary32.
float half_to_float(uint16_t bits) {
    const int sign = (bits >> 15) & 1, exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
    float magnitude;
    if (exponent == 0) {
        magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    } else if (exponent == 31) {
        magnitude = mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
    } else {
        magnitude = std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
    }
    return sign ? -magnitude : magnitude;
}

template <typename Raw>
bool read_raw(const std::string &raw, size_t count, std::vector<Raw> &values) {
    if (raw.size() != count * sizeof(Raw)) return false;
    values.resize(count);
    if (count) std::memcpy(values.data(), raw.data(), raw.size());  // little-endian hosts only
    return true;
}

// Reads every element of `tensor` as double (exact for all the integer sizes we accept here
// except int64 beyond 2^53, which `copy_int64s` reads exactly). Returns false with a message.
template <typename Out>
bool convert(const onnx::TensorProto &tensor, Out *out, size_t count, std::string &message) {
    if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
        message = "tensor \"" + tensor.name() + "\" keeps its data in an external file, which is not supported";
        return false;
    }
    auto size_error = [&](size_t stored) {
        message = "tensor \"" + tensor.name() + "\" holds " + std::to_string(stored) + " values but its dims say " +
                  std::to_string(count);
        return false;
    };
    // The element type's raw width, the repeated field that holds it otherwise, and how one value
    // becomes a number (generic lambdas: they take the raw value and the field's element alike).
    auto copy = [&](auto raw_type, const auto &field, auto decode) {
        using Raw = decltype(raw_type);
        if (tensor.has_raw_data()) {
            std::vector<Raw> v;
            if (!read_raw(tensor.raw_data(), count, v)) return size_error(tensor.raw_data().size() / sizeof(Raw));
            for (size_t i = 0; i < count; i++) out[i] = static_cast<Out>(decode(v[i]));
        } else {
            if (static_cast<size_t>(field.size()) != count) return size_error(static_cast<size_t>(field.size()));
            for (size_t i = 0; i < count; i++) out[i] = static_cast<Out>(decode(field.Get(static_cast<int>(i))));
        }
        return true;
    };
    const auto as_is = [](auto v) { return v; };
    switch (tensor.data_type()) {
    case onnx::TensorProto::FLOAT: return copy(float{}, tensor.float_data(), as_is);
    case onnx::TensorProto::DOUBLE: return copy(double{}, tensor.double_data(), as_is);
    case onnx::TensorProto::FLOAT16:
        return copy(uint16_t{}, tensor.int32_data(), [](auto v) { return half_to_float(static_cast<uint16_t>(v)); });
    // Types narrower than 32 bits keep one value per int32_data element when not raw.
    case onnx::TensorProto::INT8: return copy(int8_t{}, tensor.int32_data(), [](auto v) { return static_cast<int8_t>(v); });
    case onnx::TensorProto::UINT8:
    case onnx::TensorProto::BOOL: return copy(uint8_t{}, tensor.int32_data(), [](auto v) { return static_cast<uint8_t>(v); });
    case onnx::TensorProto::INT16: return copy(int16_t{}, tensor.int32_data(), [](auto v) { return static_cast<int16_t>(v); });
    case onnx::TensorProto::UINT16: return copy(uint16_t{}, tensor.int32_data(), [](auto v) { return static_cast<uint16_t>(v); });
    case onnx::TensorProto::INT32: return copy(int32_t{}, tensor.int32_data(), as_is);
    case onnx::TensorProto::INT64: return copy(int64_t{}, tensor.int64_data(), as_is);
    case onnx::TensorProto::UINT32: return copy(uint32_t{}, tensor.uint64_data(), as_is);
    case onnx::TensorProto::UINT64: return copy(uint64_t{}, tensor.uint64_data(), as_is);
    default:
        message = "tensor \"" + tensor.name() + "\" has element type " +
                  onnx::TensorProto::DataType_Name(static_cast<onnx::TensorProto::DataType>(tensor.data_type())) +
                  ", which is not supported";
        return false;
    }
}

// libonnx 1.12's shape inference divides by some attributes without checking them (a Conv with
// strides 0 stops the process with SIGFPE), so they are checked here first, in every subgraph too.
void require_positive_divisors(const onnx::GraphProto &graph) {
    static const char *const divisors[] = {"strides", "dilations", "group", "blocksize", "kernel_shape"};
    for (int n = 0; n < graph.node_size(); n++) {
        const onnx::NodeProto &node = graph.node(n);
        for (const onnx::AttributeProto &attribute : node.attribute()) {
            for (const char *name : divisors) {
                if (attribute.name() != name) continue;
                bool positive = true;
                for (int64_t value : attribute.ints()) positive = positive && value >= 1;
                if (attribute.type() == onnx::AttributeProto::INT) positive = attribute.i() >= 1;
                if (!positive) {
                    std::string who = node.name().empty() ? "#" + std::to_string(n) : "\"" + node.name() + "\"";
                    throw std::runtime_error("node " + who + " (" + node.op_type() + "): attribute " + attribute.name() +
                                             " must be 1 or more");
                }
            }
            if (attribute.has_g()) require_positive_divisors(attribute.g());
            for (const onnx::GraphProto &subgraph : attribute.graphs()) require_positive_divisors(subgraph);
        }
    }
}

}  // namespace

extern "C" {

void connx_string_free(char *string) { std::free(string); }

connx_model *connx_model_parse(const void *bytes, size_t length, int infer_shapes, char **error) {
    try {
        auto model = std::make_unique<connx_model>();
        if (!parse_bytes(model->proto, bytes, length, "model", error)) return nullptr;
        try {
            onnx::checker::check_model(model->proto);
        } catch (const std::exception &exception) {
            throw std::runtime_error(std::string("ONNX checker: ") + exception.what());
        }
        require_positive_divisors(model->proto.graph());
        if (infer_shapes) {
            // Strict: a node whose input shapes do not fit its op is an error, not a missing shape.
            onnx::ShapeInferenceOptions options(/*check_type*/ true, /*error_mode*/ 1, /*data_propagation*/ false);
            try {
                onnx::shape_inference::InferShapes(model->proto, onnx::OpSchemaRegistry::Instance(), options);
            } catch (const std::exception &exception) {
                throw std::runtime_error(std::string("ONNX shape inference: ") + exception.what());
            }
        }
        return model.release();
    } catch (const std::exception &exception) {
        set_error(error, exception.what());
    } catch (...) {
        set_error(error, "unknown error from libonnx");
    }
    return nullptr;
}

void connx_model_free(connx_model *model) { delete model; }

int64_t connx_model_ir_version(const connx_model *model) { return model->proto.ir_version(); }
const char *connx_model_producer(const connx_model *model) { return model->proto.producer_name().c_str(); }
const char *connx_graph_name(const connx_model *model) { return model->proto.graph().name().c_str(); }
size_t connx_opset_count(const connx_model *model) { return model->proto.opset_import_size(); }
const char *connx_opset_domain(const connx_model *model, size_t index) {
    return model->proto.opset_import(static_cast<int>(index)).domain().c_str();
}
int64_t connx_opset_version(const connx_model *model, size_t index) {
    return model->proto.opset_import(static_cast<int>(index)).version();
}

size_t connx_node_count(const connx_model *model) { return model->proto.graph().node_size(); }
#define CONNX_NODE (model->proto.graph().node(static_cast<int>(node)))
const char *connx_node_name(const connx_model *model, size_t node) { return CONNX_NODE.name().c_str(); }
const char *connx_node_op_type(const connx_model *model, size_t node) { return CONNX_NODE.op_type().c_str(); }
const char *connx_node_domain(const connx_model *model, size_t node) { return CONNX_NODE.domain().c_str(); }
size_t connx_node_input_count(const connx_model *model, size_t node) { return CONNX_NODE.input_size(); }
const char *connx_node_input(const connx_model *model, size_t node, size_t index) {
    return CONNX_NODE.input(static_cast<int>(index)).c_str();
}
size_t connx_node_output_count(const connx_model *model, size_t node) { return CONNX_NODE.output_size(); }
const char *connx_node_output(const connx_model *model, size_t node, size_t index) {
    return CONNX_NODE.output(static_cast<int>(index)).c_str();
}
size_t connx_attribute_count(const connx_model *model, size_t node) { return CONNX_NODE.attribute_size(); }
#undef CONNX_NODE

const char *connx_attribute_name(const connx_model *model, size_t node, size_t attribute) {
    return attribute_of(model, node, attribute).name().c_str();
}
int connx_attribute_type(const connx_model *model, size_t node, size_t attribute) {
    return attribute_of(model, node, attribute).type();
}
int64_t connx_attribute_int(const connx_model *model, size_t node, size_t attribute) {
    return attribute_of(model, node, attribute).i();
}
float connx_attribute_float(const connx_model *model, size_t node, size_t attribute) {
    return attribute_of(model, node, attribute).f();
}
const char *connx_attribute_string(const connx_model *model, size_t node, size_t attribute, size_t *length) {
    const std::string &text = attribute_of(model, node, attribute).s();
    if (length) *length = text.size();
    return text.data();
}
size_t connx_attribute_ints_count(const connx_model *model, size_t node, size_t attribute) {
    return attribute_of(model, node, attribute).ints_size();
}
int64_t connx_attribute_ints(const connx_model *model, size_t node, size_t attribute, size_t index) {
    return attribute_of(model, node, attribute).ints(static_cast<int>(index));
}
size_t connx_attribute_floats_count(const connx_model *model, size_t node, size_t attribute) {
    return attribute_of(model, node, attribute).floats_size();
}
float connx_attribute_floats(const connx_model *model, size_t node, size_t attribute, size_t index) {
    return attribute_of(model, node, attribute).floats(static_cast<int>(index));
}
const connx_tensor *connx_attribute_tensor(const connx_model *model, size_t node, size_t attribute) {
    return handle_of(attribute_of(model, node, attribute).t());
}

size_t connx_initializer_count(const connx_model *model) { return model->proto.graph().initializer_size(); }
const connx_tensor *connx_initializer(const connx_model *model, size_t index) {
    return handle_of(model->proto.graph().initializer(static_cast<int>(index)));
}

size_t connx_graph_input_count(const connx_model *model) { return model->proto.graph().input_size(); }
const connx_value_info *connx_graph_input(const connx_model *model, size_t index) {
    return handle_of(model->proto.graph().input(static_cast<int>(index)));
}
size_t connx_graph_output_count(const connx_model *model) { return model->proto.graph().output_size(); }
const connx_value_info *connx_graph_output(const connx_model *model, size_t index) {
    return handle_of(model->proto.graph().output(static_cast<int>(index)));
}
size_t connx_value_info_count(const connx_model *model) { return model->proto.graph().value_info_size(); }
const connx_value_info *connx_value_info_at(const connx_model *model, size_t index) {
    return handle_of(model->proto.graph().value_info(static_cast<int>(index)));
}

const char *connx_value_name(const connx_value_info *value) { return value_of(value).name().c_str(); }
int connx_value_element_type(const connx_value_info *value) {
    const auto &type = value_of(value).type();
    return type.has_tensor_type() ? type.tensor_type().elem_type() : 0;
}
int64_t connx_value_rank(const connx_value_info *value) {
    const auto &type = value_of(value).type();
    if (!type.has_tensor_type() || !type.tensor_type().has_shape()) return -1;
    return type.tensor_type().shape().dim_size();
}
int connx_value_dim(const connx_value_info *value, size_t index, int64_t *number, const char **symbol) {
    const auto &dim = value_of(value).type().tensor_type().shape().dim(static_cast<int>(index));
    if (dim.has_dim_value()) {
        if (number) *number = dim.dim_value();
        return CONNX_DIM_VALUE;
    }
    if (dim.has_dim_param()) {
        if (symbol) *symbol = dim.dim_param().c_str();
        return CONNX_DIM_PARAM;
    }
    return CONNX_DIM_UNKNOWN;
}

const char *connx_tensor_name(const connx_tensor *tensor) { return tensor_of(tensor).name().c_str(); }
int connx_tensor_data_type(const connx_tensor *tensor) { return tensor_of(tensor).data_type(); }
size_t connx_tensor_rank(const connx_tensor *tensor) { return tensor_of(tensor).dims_size(); }
int64_t connx_tensor_dim(const connx_tensor *tensor, size_t index) {
    return tensor_of(tensor).dims(static_cast<int>(index));
}

int connx_tensor_copy_floats(const connx_tensor *tensor, float *out, size_t count, char **error) {
    try {
        std::string message;
        if (convert(tensor_of(tensor), out, count, message)) return 0;
        set_error(error, message);
    } catch (const std::exception &exception) {
        set_error(error, exception.what());
    } catch (...) {
        set_error(error, "unknown error while reading a tensor");
    }
    return -1;
}

int connx_tensor_copy_int64s(const connx_tensor *tensor, int64_t *out, size_t count, char **error) {
    try {
        const auto &proto = tensor_of(tensor);
        switch (proto.data_type()) {
        case onnx::TensorProto::FLOAT: case onnx::TensorProto::DOUBLE: case onnx::TensorProto::FLOAT16:
        case onnx::TensorProto::UINT64:
            set_error(error, "tensor \"" + proto.name() + "\" is not an integer tensor of at most 64 signed bits");
            return -1;
        default: break;
        }
        std::string message;
        if (convert(proto, out, count, message)) return 0;
        set_error(error, message);
    } catch (const std::exception &exception) {
        set_error(error, exception.what());
    } catch (...) {
        set_error(error, "unknown error while reading a tensor");
    }
    return -1;
}

connx_tensor_file *connx_tensor_file_parse(const void *bytes, size_t length, char **error) {
    try {
        auto file = std::make_unique<connx_tensor_file>();
        if (!parse_bytes(file->proto, bytes, length, "TensorProto", error)) return nullptr;
        return file.release();
    } catch (const std::exception &exception) {
        set_error(error, exception.what());
    } catch (...) {
        set_error(error, "unknown error from protobuf");
    }
    return nullptr;
}

const connx_tensor *connx_tensor_file_tensor(const connx_tensor_file *file) { return handle_of(file->proto); }
void connx_tensor_file_free(connx_tensor_file *file) { delete file; }

}  // extern "C"
