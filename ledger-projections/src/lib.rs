//! Projector runner and read-model projections (not built yet: see issue 4).
