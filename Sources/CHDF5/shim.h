#include <hdf5.h>
// HDF5's property-list and type constants are macros over global ids, which Swift cannot import.
static inline hid_t qat_H5P_DEFAULT(void) { return H5P_DEFAULT; }
static inline hid_t qat_H5P_FILE_ACCESS(void) { return H5P_FILE_ACCESS; }
static inline hid_t qat_H5P_FILE_CREATE(void) { return H5P_FILE_CREATE; }
static inline hid_t qat_H5P_DATASET_CREATE(void) { return H5P_DATASET_CREATE; }
static inline hid_t qat_H5S_ALL(void) { return H5S_ALL; }
static inline hid_t qat_H5T_NATIVE_FLOAT(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t qat_H5T_NATIVE_DOUBLE(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t qat_H5T_NATIVE_INT8(void) { return H5T_NATIVE_INT8; }
static inline hid_t qat_H5T_NATIVE_UINT8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t qat_H5T_NATIVE_INT16(void) { return H5T_NATIVE_INT16; }
static inline hid_t qat_H5T_NATIVE_INT32(void) { return H5T_NATIVE_INT32; }
static inline hid_t qat_H5T_NATIVE_INT64(void) { return H5T_NATIVE_INT64; }
static inline hid_t qat_H5T_NATIVE_UINT64(void) { return H5T_NATIVE_UINT64; }
static inline hid_t qat_H5T_C_S1(void) { return H5T_C_S1; }
static inline unsigned qat_H5F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline unsigned qat_H5F_ACC_EXCL(void) { return H5F_ACC_EXCL; }
static inline unsigned qat_H5F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline size_t qat_H5T_VARIABLE(void) { return H5T_VARIABLE; }
static inline hid_t qat_H5P_LINK_CREATE(void) { return H5P_LINK_CREATE; }
static inline hid_t qat_H5E_DEFAULT(void) { return H5E_DEFAULT; }
static inline hid_t qat_H5T_NATIVE_UINT16(void) { return H5T_NATIVE_UINT16; }
static inline hid_t qat_H5T_NATIVE_UINT32(void) { return H5T_NATIVE_UINT32; }
static inline hid_t qat_H5P_GROUP_CREATE(void) { return H5P_GROUP_CREATE; }
