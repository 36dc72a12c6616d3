//! The Gaussian mixture target (under construction).
