#include <hdf5.h>
/* H5T_NATIVE_* and H5P_* are macros over library globals that Swift cannot import: expose getters. */
static inline hid_t scalpel_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t scalpel_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t scalpel_h5t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t scalpel_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t scalpel_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t scalpel_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t scalpel_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t scalpel_h5p_file_access(void) { return H5P_FILE_ACCESS; }
static inline hid_t scalpel_h5p_link_create(void) { return H5P_LINK_CREATE; }
static inline hid_t scalpel_h5p_dataset_access(void) { return H5P_DATASET_ACCESS; }
