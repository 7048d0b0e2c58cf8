// CONNX writer: builds a ModelProto from plain C calls, checks it with onnx::checker and
// serialises it. The caller describes the graph (inputs, outputs, initializers, nodes with
// attributes) and never sees protobuf; no C++ exception crosses this interface.
#ifndef CONNX_WRITER_H
#define CONNX_WRITER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct connx_builder connx_builder;

// A model of the default ONNX domain at `opset`, with IR version `ir_version`.
connx_builder *connx_builder_new(int64_t ir_version, int64_t opset, const char *producer, const char *graph_name);
void connx_builder_free(connx_builder *builder);

// A graph input or output of element type `element_type` (connx.h's CONNX_FLOAT, …); a
// negative dim is the symbolic batch dim "N".
void connx_builder_add_input(connx_builder *builder, const char *name, int element_type, const int64_t *dims, size_t rank);
void connx_builder_add_output(connx_builder *builder, const char *name, int element_type, const int64_t *dims, size_t rank);

// An initializer; `bytes` holds the elements little-endian (raw_data), `length` bytes.
void connx_builder_add_initializer(connx_builder *builder, const char *name, int data_type, const int64_t *dims,
                                   size_t rank, const void *bytes, size_t length);

// A node of the default domain; the attribute calls below apply to the node added last.
void connx_builder_add_node(connx_builder *builder, const char *op_type, const char *name,
                            const char *const *inputs, size_t input_count, const char *const *outputs, size_t output_count);
void connx_builder_attribute_int(connx_builder *builder, const char *name, int64_t value);
void connx_builder_attribute_float(connx_builder *builder, const char *name, float value);
void connx_builder_attribute_ints(connx_builder *builder, const char *name, const int64_t *values, size_t count);

// Runs onnx::checker::check_model (full check, with strict shape inference) and serialises the
// model. Returns 0 and sets *bytes (free with connx_bytes_free) and *length, or -1 with *error.
int connx_builder_serialize(connx_builder *builder, void **bytes, size_t *length, char **error);
void connx_bytes_free(void *bytes);

#ifdef __cplusplus
}
#endif

#endif
