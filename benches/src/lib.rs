//! Benchmarks of connpool; see the files under benches/.
