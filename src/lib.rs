//! kvrun
