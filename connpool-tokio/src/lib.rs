//! connpool on tokio (the adapter is being written).
