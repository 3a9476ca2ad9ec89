#include <hdf5.h>
#include <zlib.h>
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
/* Added for HDF5Store. */
static inline hid_t scalpel_h5p_file_create(void) { return H5P_FILE_CREATE; }
static inline hid_t scalpel_h5p_group_create(void) { return H5P_GROUP_CREATE; }
static inline hid_t scalpel_h5p_attribute_create(void) { return H5P_ATTRIBUTE_CREATE; }
static inline unsigned scalpel_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned scalpel_h5f_acc_rdwr(void) { return H5F_ACC_RDWR; }
static inline unsigned scalpel_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline unsigned scalpel_h5f_acc_excl(void) { return H5F_ACC_EXCL; }
static inline size_t scalpel_h5t_variable(void) { return H5T_VARIABLE; }
static inline H5F_libver_t scalpel_h5f_libver_latest(void) { return H5F_LIBVER_LATEST; }
