//! The `tollgate` binary.
