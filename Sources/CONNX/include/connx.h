// CONNX: a plain C view of an ONNX model, parsed and checked by Debian's libonnx (protobuf).
//
// No C++ exception crosses this interface: exceptions are caught inside the shim and come back as an
// error string (free it with connx_string_free). Handles returned by accessors point into the
// model and live as long as it; only connx_model_free / connx_tensor_file_free release memory.
#ifndef CONNX_H
#define CONNX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct connx_model connx_model;
typedef struct connx_tensor connx_tensor;
typedef struct connx_value_info connx_value_info;
typedef struct connx_tensor_file connx_tensor_file;

// Attribute types, as onnx.proto's AttributeProto.AttributeType numbers them.
enum {
    CONNX_ATTRIBUTE_UNDEFINED = 0, CONNX_ATTRIBUTE_FLOAT = 1, CONNX_ATTRIBUTE_INT = 2,
    CONNX_ATTRIBUTE_STRING = 3, CONNX_ATTRIBUTE_TENSOR = 4, CONNX_ATTRIBUTE_GRAPH = 5,
    CONNX_ATTRIBUTE_FLOATS = 6, CONNX_ATTRIBUTE_INTS = 7, CONNX_ATTRIBUTE_STRINGS = 8,
    CONNX_ATTRIBUTE_TENSORS = 9, CONNX_ATTRIBUTE_GRAPHS = 10,
};

// Tensor element types, as onnx.proto's TensorProto.DataType numbers them (the ones we name).
enum {
    CONNX_FLOAT = 1, CONNX_UINT8 = 2, CONNX_INT8 = 3, CONNX_INT32 = 6, CONNX_INT64 = 7,
    CONNX_BOOL = 9, CONNX_FLOAT16 = 10, CONNX_DOUBLE = 11,
};

// A dimension of a graph input or output: a number, a symbol (dim_param) or nothing.
enum { CONNX_DIM_UNKNOWN = 0, CONNX_DIM_VALUE = 1, CONNX_DIM_PARAM = 2 };

void connx_string_free(char *string);

// Parses a serialized ModelProto and runs onnx::checker::check_model on it; with
// infer_shapes != 0 also onnx::shape_inference (strict: a node whose shapes do not fit is an
// error). NULL on failure, with *error set to a message.
connx_model *connx_model_parse(const void *bytes, size_t length, int infer_shapes, char **error);
void connx_model_free(connx_model *model);

int64_t connx_model_ir_version(const connx_model *model);
const char *connx_model_producer(const connx_model *model);
const char *connx_graph_name(const connx_model *model);
size_t connx_opset_count(const connx_model *model);
const char *connx_opset_domain(const connx_model *model, size_t index);
int64_t connx_opset_version(const connx_model *model, size_t index);

size_t connx_node_count(const connx_model *model);
const char *connx_node_name(const connx_model *model, size_t node);
const char *connx_node_op_type(const connx_model *model, size_t node);
const char *connx_node_domain(const connx_model *model, size_t node);
size_t connx_node_input_count(const connx_model *model, size_t node);
const char *connx_node_input(const connx_model *model, size_t node, size_t index);
size_t connx_node_output_count(const connx_model *model, size_t node);
const char *connx_node_output(const connx_model *model, size_t node, size_t index);

size_t connx_attribute_count(const connx_model *model, size_t node);
const char *connx_attribute_name(const connx_model *model, size_t node, size_t attribute);
int connx_attribute_type(const connx_model *model, size_t node, size_t attribute);
int64_t connx_attribute_int(const connx_model *model, size_t node, size_t attribute);
float connx_attribute_float(const connx_model *model, size_t node, size_t attribute);
// The string's bytes (not NUL-terminated in general: use the length).
const char *connx_attribute_string(const connx_model *model, size_t node, size_t attribute, size_t *length);
size_t connx_attribute_ints_count(const connx_model *model, size_t node, size_t attribute);
int64_t connx_attribute_ints(const connx_model *model, size_t node, size_t attribute, size_t index);
size_t connx_attribute_floats_count(const connx_model *model, size_t node, size_t attribute);
float connx_attribute_floats(const connx_model *model, size_t node, size_t attribute, size_t index);
const connx_tensor *connx_attribute_tensor(const connx_model *model, size_t node, size_t attribute);

size_t connx_initializer_count(const connx_model *model);
const connx_tensor *connx_initializer(const connx_model *model, size_t index);

// Graph inputs (which may include initializers, in IR < 4 models), outputs, and the
// intermediate value_info that shape inference adds.
size_t connx_graph_input_count(const connx_model *model);
const connx_value_info *connx_graph_input(const connx_model *model, size_t index);
size_t connx_graph_output_count(const connx_model *model);
const connx_value_info *connx_graph_output(const connx_model *model, size_t index);
size_t connx_value_info_count(const connx_model *model);
const connx_value_info *connx_value_info_at(const connx_model *model, size_t index);

const char *connx_value_name(const connx_value_info *value);
// The element type of a tensor value; 0 if the value is not a tensor or has none.
int connx_value_element_type(const connx_value_info *value);
// The rank, or -1 if the value has no shape.
int64_t connx_value_rank(const connx_value_info *value);
// One dimension: its kind, and its number or symbol through the out-parameters.
int connx_value_dim(const connx_value_info *value, size_t index, int64_t *number, const char **symbol);

const char *connx_tensor_name(const connx_tensor *tensor);
int connx_tensor_data_type(const connx_tensor *tensor);
size_t connx_tensor_rank(const connx_tensor *tensor);
int64_t connx_tensor_dim(const connx_tensor *tensor, size_t index);
// Copies the tensor's `count` elements (the product of its dims) converted to float32
// (from float, float16, double, int8/16/32/64, uint8/16/32/64, bool). Returns 0, or -1 with
// *error set (external data, a type we do not convert, a size that does not match the dims).
int connx_tensor_copy_floats(const connx_tensor *tensor, float *out, size_t count, char **error);
// The same for integer tensors (int8 … int64, uint8 … uint32, bool), kept as int64.
int connx_tensor_copy_int64s(const connx_tensor *tensor, int64_t *out, size_t count, char **error);

// A serialized TensorProto on its own (the backend tests' input_0.pb / output_0.pb).
connx_tensor_file *connx_tensor_file_parse(const void *bytes, size_t length, char **error);
const connx_tensor *connx_tensor_file_tensor(const connx_tensor_file *file);
void connx_tensor_file_free(connx_tensor_file *file);

#ifdef __cplusplus
}
#endif

#endif
