public enum HDF5Placeholder {}
