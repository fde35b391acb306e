//! The compose stack: its files checked structurally, and its topology run without Docker.
