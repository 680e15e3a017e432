//! connpool on smol (the adapter is being written).
