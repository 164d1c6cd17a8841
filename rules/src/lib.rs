//! Rules runtime (not built yet).
