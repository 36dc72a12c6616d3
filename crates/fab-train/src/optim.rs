//! Optimisers (under construction).
