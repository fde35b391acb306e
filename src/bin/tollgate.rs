//! `tollgate check-rules`: see README.

fn main() {}
