// The writing side of the shim: a ModelProto built from the C calls of connx_writer.h, checked
// by libonnx's checker and serialised. No exception leaves this file.
#include "connx_writer.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

struct connx_builder {
    onnx::ModelProto proto;
    onnx::NodeProto *last_node = nullptr;
};

namespace {

void set_value_info(onnx::ValueInfoProto *value, const char *name, int element_type, const int64_t *dims, size_t rank) {
    value->set_name(name);
    auto *tensor = value->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(element_type);
    auto *shape = tensor->mutable_shape();
    for (size_t i = 0; i < rank; ++i) {
        auto *dim = shape->add_dim();
        if (dims[i] < 0) dim->set_dim_param("N"); else dim->set_dim_value(dims[i]);
    }
}

char *copy_string(const std::string &text) {
    char *result = static_cast<char *>(std::malloc(text.size() + 1));
    if (result) std::memcpy(result, text.c_str(), text.size() + 1);
    return result;
}

}  // namespace

extern "C" {

connx_builder *connx_builder_new(int64_t ir_version, int64_t opset, const char *producer, const char *graph_name) {
    try {
        auto *builder = new connx_builder;
        builder->proto.set_ir_version(ir_version);
        builder->proto.set_producer_name(producer);
        auto *import = builder->proto.add_opset_import();
        import->set_domain("");
        import->set_version(opset);
        builder->proto.mutable_graph()->set_name(graph_name);
        return builder;
    } catch (...) {
        return nullptr;
    }
}

void connx_builder_free(connx_builder *builder) { delete builder; }

void connx_builder_add_input(connx_builder *builder, const char *name, int element_type, const int64_t *dims, size_t rank) {
    set_value_info(builder->proto.mutable_graph()->add_input(), name, element_type, dims, rank);
}

void connx_builder_add_output(connx_builder *builder, const char *name, int element_type, const int64_t *dims, size_t rank) {
    set_value_info(builder->proto.mutable_graph()->add_output(), name, element_type, dims, rank);
}

void connx_builder_add_initializer(connx_builder *builder, const char *name, int data_type, const int64_t *dims,
                                   size_t rank, const void *bytes, size_t length) {
    auto *tensor = builder->proto.mutable_graph()->add_initializer();
    tensor->set_name(name);
    tensor->set_data_type(data_type);
    for (size_t i = 0; i < rank; ++i) tensor->add_dims(dims[i]);
    tensor->set_raw_data(bytes, length);
}

void connx_builder_add_node(connx_builder *builder, const char *op_type, const char *name,
                            const char *const *inputs, size_t input_count, const char *const *outputs, size_t output_count) {
    auto *node = builder->proto.mutable_graph()->add_node();
    node->set_op_type(op_type);
    node->set_name(name);
    for (size_t i = 0; i < input_count; ++i) node->add_input(inputs[i]);
    for (size_t i = 0; i < output_count; ++i) node->add_output(outputs[i]);
    builder->last_node = node;
}

void connx_builder_attribute_int(connx_builder *builder, const char *name, int64_t value) {
    auto *attribute = builder->last_node->add_attribute();
    attribute->set_name(name);
    attribute->set_type(onnx::AttributeProto::INT);
    attribute->set_i(value);
}

void connx_builder_attribute_float(connx_builder *builder, const char *name, float value) {
    auto *attribute = builder->last_node->add_attribute();
    attribute->set_name(name);
    attribute->set_type(onnx::AttributeProto::FLOAT);
    attribute->set_f(value);
}

void connx_builder_attribute_ints(connx_builder *builder, const char *name, const int64_t *values, size_t count) {
    auto *attribute = builder->last_node->add_attribute();
    attribute->set_name(name);
    attribute->set_type(onnx::AttributeProto::INTS);
    for (size_t i = 0; i < count; ++i) attribute->add_ints(values[i]);
}

int connx_builder_serialize(connx_builder *builder, void **bytes, size_t *length, char **error) {
    try {
        try {
            onnx::checker::check_model(builder->proto);
            onnx::ModelProto inferred = builder->proto;
            onnx::ShapeInferenceOptions options(/*check_type*/ true, /*error_mode*/ 1, /*data_propagation*/ false);
            onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(), options);
        } catch (const std::exception &exception) {
            throw std::runtime_error(std::string("ONNX checker: ") + exception.what());
        }
        const size_t size = builder->proto.ByteSizeLong();
        if (size > static_cast<size_t>(std::numeric_limits<int>::max())) {
            throw std::runtime_error("the model is larger than 2 GB, which protobuf cannot write in one piece");
        }
        void *buffer = std::malloc(size ? size : 1);
        if (!buffer) throw std::runtime_error("out of memory");
        if (!builder->proto.SerializeToArray(buffer, static_cast<int>(size))) {
            std::free(buffer);
            throw std::runtime_error("protobuf could not serialise the model");
        }
        *bytes = buffer;
        *length = size;
        return 0;
    } catch (const std::exception &exception) {
        if (error) *error = copy_string(exception.what());
    } catch (...) {
        if (error) *error = copy_string("unknown error from libonnx");
    }
    return -1;
}

void connx_bytes_free(void *bytes) { std::free(bytes); }

}  // extern "C"
